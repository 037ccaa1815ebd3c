"""Gives every call a deadline, carries it in interceptors.context, and refuses hopeless ones.

A call that arrives without a deadline would otherwise let its work, and every call it
makes downstream, run for ever; it gets `default_seconds`, enforced here (a unary call past
it is answered DEADLINE_EXCEEDED). Streams (either side) are exempt: a watch is meant to
stay open, and interceptors.server.streams ends one that falls silent. The remaining time
lives in `context.deadline` as an absolute monotonic time, which the client side turns
into the timeout of every outgoing call.

A call with less than `minimum_seconds` left cannot be served in time, so it is answered
DEADLINE_EXCEEDED before any work: the truth about why (RESOURCE_EXHAUSTED would invite a
retry that fails the same way), and it never takes a concurrency slot, since this layer
sits outside backpressure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from interceptors import context as rpc
from interceptors.server.call import Abort, Call, Method, Rejected, Scope

_monotonic = time.monotonic
"""A module constant: a module attribute is looked up on every use."""


@dataclass(frozen=True)
class DeadlineSettings:
    default_seconds: float = 10.0
    """Deadline of a unary call that arrives without one."""
    minimum_seconds: float = 0.005
    """A call with less time left than this is refused before any work."""

    def __post_init__(self) -> None:
        if self.default_seconds <= 0 or not 0 <= self.minimum_seconds < self.default_seconds:
            raise ValueError(f"need 0 <= minimum_seconds < default_seconds: {self}")


class Deadlines:
    """The layer: refuses calls with too little time left; carries and enforces the rest."""

    def __init__(self, settings: DeadlineSettings, rejected: Rejected) -> None:
        self.settings = settings
        self._rejected = rejected

    def for_method(self, method: Method) -> Callable[[Call], Scope | None]:
        return self.begin_stream if method.streams else self.begin

    def begin_stream(self, call: Call) -> Scope | None:
        """A stream gets no default deadline, only the one its caller sent, if any."""
        return None if call.context.time_remaining() is None else self.begin(call)

    def begin(self, call: Call) -> Scope | None:
        settings = self.settings
        remaining = call.context.time_remaining()
        if remaining is None:
            return _Enforced(settings.default_seconds)
        if remaining < settings.minimum_seconds:
            self._rejected("deadline", call.method.path)
            raise Abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"only {remaining * 1000:.1f} ms of the deadline were left; this server "
                f"needs at least {settings.minimum_seconds * 1000:g} ms to answer",
            )
        # Only carried: grpc cancels a call past its caller's deadline.
        rpc.deadline.set(_monotonic() + remaining)
        return None


class _Enforced:
    """The server's default deadline on a call that sent none, carried and enforced.

    asyncio.timeout's logic, in plain calls rather than its context manager's two
    coroutines: past the deadline the call's task is cancelled, and if the cancellation is
    what ends the call it is answered DEADLINE_EXCEEDED.
    """

    __slots__ = ("_expired", "_seconds", "_task", "_timer")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        rpc.deadline.set(time.monotonic() + seconds)
        task = asyncio.current_task()
        assert task is not None  # the chain runs every call in the RPC's own task
        self._task = task
        self._expired = False
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def end(self, call: Call, error: BaseException | None) -> None:
        self._timer.cancel()
        # Not ours to answer if someone else cancelled the task as well.
        cancelled = isinstance(error, asyncio.CancelledError)
        if self._expired and self._task.uncancel() == 0 and cancelled:
            raise Abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the call sent no deadline and ran past the server's default of "
                f"{self._seconds:g} s",
            )
