"""A circuit breaker per target: stop calling a dependency that is down, probe it, resume.

pybreaker supplies the state machine (open after `failures` consecutive failures, closed
again after `probes` successful probes), the failure classification and the listeners
that log and export state changes. But it is synchronous: `breaker.call(async_fn)` counts
the un-awaited coroutine as a success, and it holds its lock for the whole wrapped call.
So this layer admits calls itself and reports each outcome *after* the await, replaying it
through `breaker.call`; pybreaker's lock is held for microseconds, never across an await.
Admission runs on the event loop with no await inside, so it is atomic with respect to
every other coroutine: after the reset timeout exactly `probes` calls get through, however
many arrive at once.

Added to pybreaker: a monotonic clock for the reset timeout (pybreaker reads wall time),
the probe gate (pybreaker lets every half-open call through), a probe timeout (one hung
probe would otherwise hold the breaker half-open), and generations, so that the outcome of
a call admitted before a state change is not taken for a probe's.

A refused call fails at once with UNAVAILABLE naming the target, and carries
`grpc-retry-pushback-ms` so that no retry layer sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc
import pybreaker
from grpc import aio

from interceptors.client.call import Invoke, OutgoingCall, ReplicaLost
from interceptors.client.refusal import is_scoped
from interceptors.context import PUSHBACK_KEY

FAILURE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
"""Codes that say the target is unwell; others (NOT_FOUND, INVALID_ARGUMENT, …) are
answers, and count as successes. INTERNAL and UNKNOWN are answers too: they say a request
met a bug, which one caller can provoke at will with the same bad request, and a breaker
they opened would refuse every caller's calls. A refusal the server marks `nova-refusal`
(one caller over its rate limit, one method's own capacity full) is an answer as well,
whatever its code: it is about that caller or that method, not the target."""


def is_failure(error: aio.AioRpcError, codes: frozenset[grpc.StatusCode]) -> bool:
    """Whether `error` says the target is unwell: its code is one of `codes` and the server
    did not mark it as a refusal of one caller or one method."""
    return error.code() in codes and not is_scoped(error)


@dataclass(frozen=True)
class BreakerSettings:
    failures: int = 5
    """Consecutive failures that open the breaker."""
    reset_seconds: float = 5.0
    """How long it stays open before probes are let through."""
    probes: int = 1
    """Calls admitted when half-open; all must succeed to close it, one failure reopens it."""
    probe_timeout_seconds: float = 1.0
    failure_codes: frozenset[grpc.StatusCode] = FAILURE_CODES

    def __post_init__(self) -> None:
        if self.failures < 1 or self.probes < 1:
            raise ValueError(f"failures and probes must be at least 1: {self}")
        if self.reset_seconds <= 0 or self.probe_timeout_seconds <= 0:
            raise ValueError(f"reset and probe timeouts must be > 0: {self}")


class CircuitOpen(aio.AioRpcError):
    """UNAVAILABLE from the breaker itself: the call was never sent."""


@dataclass(frozen=True, slots=True)
class Ticket:
    generation: int
    probe: bool


def _replay(error: aio.AioRpcError | None) -> None:
    if error is not None:
        raise error


class Breaker(pybreaker.CircuitBreakerListener):
    """The layer; also the first listener of its own pybreaker, to follow its state."""

    def __init__(
        self,
        target: str,
        settings: BreakerSettings,
        listeners: Sequence[pybreaker.CircuitBreakerListener] = (),
    ) -> None:
        self.target = target
        self._settings = settings
        self._generation = 0
        self._ticket = Ticket(0, probe=False)
        self._probes_left = 0
        self._retry_at = 0.0
        self.state = pybreaker.STATE_CLOSED
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=settings.failures,
            reset_timeout=settings.reset_seconds,
            success_threshold=settings.probes,
            exclude=[lambda error: not is_failure(error, settings.failure_codes)],
            listeners=[self, *listeners],
            name=target,
        )

    async def __call__(self, call: OutgoingCall, proceed: Invoke) -> Any:
        ticket = self.admit()
        if ticket.probe:
            return await self._probe(ticket, call, proceed)
        try:
            response = await proceed(call)
        except ReplicaLost:
            raise  # one replica went, not the target: no verdict on it
        except aio.AioRpcError as error:
            self.record(ticket, error)
            raise
        self.record(ticket, None)
        return response

    def admit(self) -> Ticket:
        """Lets a call through (a probe when half-open) or raises CircuitOpen."""
        if self.state == pybreaker.STATE_CLOSED:
            return self._ticket
        if self.state == pybreaker.STATE_OPEN:
            if time.monotonic() < self._retry_at:
                raise self._refusal()
            self._breaker.half_open()
        if self._probes_left == 0:
            raise self._refusal()
        self._probes_left -= 1
        return self._ticket

    def record(self, ticket: Ticket, error: aio.AioRpcError | None) -> None:
        """Feeds an outcome to the state machine, unless the state changed since admission."""
        if ticket.generation != self._generation:
            return
        if error is None and not ticket.probe and self._breaker.fail_counter == 0:
            return  # the common case changes nothing: skip pybreaker's lock and listeners
        with contextlib.suppress(pybreaker.CircuitBreakerError, aio.AioRpcError):
            self._breaker.call(_replay, error)

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        self._generation += 1
        self.state = new_state.name
        if self.state == pybreaker.STATE_OPEN:
            self._retry_at = time.monotonic() + self._settings.reset_seconds
        elif self.state == pybreaker.STATE_HALF_OPEN:
            self._probes_left = self._settings.probes
        self._ticket = Ticket(self._generation, probe=self.state == pybreaker.STATE_HALF_OPEN)

    async def _probe(self, ticket: Ticket, call: OutgoingCall, proceed: Invoke) -> Any:
        limit = self._settings.probe_timeout_seconds
        timeout = limit if call.timeout is None else min(call.timeout, limit)
        try:
            async with asyncio.timeout(limit):
                response = await proceed(replace(call, timeout=timeout))
        except ReplicaLost:
            # One replica went, the target has others: no verdict, so free the probe slot.
            if ticket.generation == self._generation:
                self._probes_left += 1
            raise
        except aio.AioRpcError as error:
            self.record(ticket, error)
            raise
        except TimeoutError:
            silent = aio.AioRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                aio.Metadata(),
                aio.Metadata(),
                f"probe of {self.target} got no answer within {limit:g} s",
                None,
            )
            self.record(ticket, silent)
            raise silent from None
        except BaseException:
            # Cancelled by its caller (or a local bug): no verdict, so free the probe slot.
            if ticket.generation == self._generation:
                self._probes_left += 1
            raise
        self.record(ticket, None)
        return response

    def _refusal(self) -> CircuitOpen:
        if self.state == pybreaker.STATE_OPEN:
            wait = max(0.0, self._retry_at - time.monotonic())
            why = (
                f"circuit breaker for {self.target} is open after {self._settings.failures} "
                f"consecutive failures; next probe in {wait:.2f} s"
            )
        else:
            wait = self._settings.probe_timeout_seconds
            why = f"circuit breaker for {self.target} is half-open; its probes are in flight"
        pushback = aio.Metadata((PUSHBACK_KEY, str(round(wait * 1000))))
        return CircuitOpen(grpc.StatusCode.UNAVAILABLE, aio.Metadata(), pushback, why, None)
