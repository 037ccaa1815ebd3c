"""Bounds long-lived streams: how many are open per connection and per server, and how long
one may stay silent.

A stream (a health Watch, a reflection session) holds its place for as long as its client
keeps it open, mostly doing nothing. Counted against the unary in-flight limit
(interceptors.server.backpressure), 20 idle watches on one connection had every unary call
refused. So streams take no unary slot; instead at most `max_per_connection` are open on
one connection (the gRPC peer, address and port) and `max_per_server` in all; past either a
stream is refused RESOURCE_EXHAUSTED before any work, naming the limit. A stream through
which no message has passed either way for `idle_seconds` is ended DEADLINE_EXCEEDED. A
message counts once the servicer has read it or its write has completed: a write waiting
on a client that stopped reading is no sign of life. A Watch writes only when the health
status changes, so one that sees no change for that long ends, and its client opens a
new one (gRPC's health clients do). No stream outlives its connection, which the server
closes after grpc.max_connection_age_ms and its grace (services.runtime.server).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import grpc

from interceptors.context import REFUSAL_CALLER, REFUSAL_KEY
from interceptors.server.call import Abort, Behavior, Call, Method, Rejected, Wrapping

_DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED


@dataclass(frozen=True)
class StreamSettings:
    max_per_connection: int = 16
    """Streams open at once on one connection: one client cannot take the server's share."""
    max_per_server: int = 1000
    """Streams open at once on the server, whatever their connections: each holds a task,
    buffers and (for a Watch) a waiter until it ends."""
    idle_seconds: float = 300.0
    """A stream with no message either way for this long is ended."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_per_connection <= self.max_per_server or self.idle_seconds <= 0:
            raise ValueError(
                f"need 1 <= max_per_connection <= max_per_server and idle_seconds > 0: {self}"
            )


class Streams:
    """The layer: admits a stream within both bounds and ends it when it falls silent.
    Unary calls are not its business (backpressure's), and cost nothing here."""

    def __init__(self, settings: StreamSettings, rejected: Rejected) -> None:
        self.settings = settings
        self._rejected = rejected
        self.open = 0
        """Streams open on this server."""
        self._open_by_peer: dict[str, int] = {}
        """Streams open per connection; a connection with none has no entry, so there are
        at most max_per_server entries."""

    def for_method(self, method: Method) -> Wrapping | None:
        if not method.streams:
            return None
        return Wrapping(partial(self._observed, method.unary_request), self.admit)

    def admit(self, call: Call) -> _Slot:
        settings = self.settings
        peer = call.context.peer()
        on_peer = self._open_by_peer.get(peer, 0)
        if on_peer >= settings.max_per_connection:
            self._rejected("connection_streams", call.method.path)
            raise Abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many streams on this connection: {on_peer} open, the limit is "
                f"{settings.max_per_connection} (NOVA_MAX_STREAMS_PER_CONNECTION); close one "
                "or open this one on another connection",
                ((REFUSAL_KEY, REFUSAL_CALLER),),
            )
        if self.open >= settings.max_per_server:
            self._rejected("streams", call.method.path)
            raise Abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many streams on this server: {self.open} open, the limit is "
                f"{settings.max_per_server} (NOVA_MAX_STREAMS); try again later or another "
                "replica",
            )
        self.open += 1
        self._open_by_peer[peer] = on_peer + 1
        return _Slot(self, peer)

    def release(self, peer: str) -> None:
        self.open -= 1
        left = self._open_by_peer[peer] - 1
        if left:
            self._open_by_peer[peer] = left
        else:
            del self._open_by_peer[peer]

    def _observed(self, unary_request: bool, behavior: Behavior) -> Behavior:
        """`behavior` with the idle timeout: it sees the context and the requests through
        wrappers that note each message."""
        seconds = self.settings.idle_seconds

        async def observed(request: Any, context: Any) -> Any:
            idle = _Idle(seconds)
            requests = request if unary_request else _Requests(request, idle)
            try:
                return await behavior(requests, _Observed(context, idle))
            except asyncio.CancelledError:
                # Not ours to answer if someone else cancelled the task as well.
                if idle.expired and idle.task.uncancel() == 0:
                    await context.abort(
                        _DEADLINE_EXCEEDED,
                        f"idle for {seconds:g} s: no message either way "
                        "(NOVA_STREAM_IDLE_SECONDS); open a new stream",
                    )
                raise
            finally:
                idle.stop()

        return observed


class _Slot:
    """An admitted stream's place, given back when it ends."""

    __slots__ = ("_layer", "_peer")

    def __init__(self, layer: Streams, peer: str) -> None:
        self._layer = layer
        self._peer = peer

    def end(self, call: Call, error: BaseException | None) -> None:
        self._layer.release(self._peer)


class _Idle:
    """Cancels the task serving a stream once no message has passed for `seconds`. A
    message only notes the time; the one timer, when it fires, sets itself again for the
    last message's time plus `seconds` if there was one since."""

    __slots__ = ("_loop", "_seconds", "_timer", "expired", "last", "task")

    def __init__(self, seconds: float) -> None:
        self._loop = loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # the chain runs every call in the RPC's own task
        self.task = task
        self._seconds = seconds
        self.expired = False
        self.last = loop.time()
        self._timer = loop.call_at(self.last + seconds, self._check)

    def touch(self) -> None:
        self.last = self._loop.time()

    def _check(self) -> None:
        due = self.last + self._seconds
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._check)
            return
        self.expired = True
        self.task.cancel()

    def stop(self) -> None:
        self._timer.cancel()


class _Observed:
    """The servicer's context, noting each message read or written through it; the rest is
    the context's own."""

    __slots__ = ("_context", "_idle")

    def __init__(self, context: Any, idle: _Idle) -> None:
        self._context = context
        self._idle = idle

    async def write(self, message: Any) -> None:
        await self._context.write(message)
        self._idle.touch()

    async def read(self) -> Any:
        message = await self._context.read()
        self._idle.touch()
        return message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class _Requests:
    """A stream's request iterator, noting each message the servicer takes from it."""

    __slots__ = ("_idle", "_messages")

    def __init__(self, messages: AsyncIterator[Any], idle: _Idle) -> None:
        self._messages = aiter(messages)
        self._idle = idle

    def __aiter__(self) -> _Requests:
        return self

    async def __anext__(self) -> Any:
        message = await anext(self._messages)
        self._idle.touch()
        return message
