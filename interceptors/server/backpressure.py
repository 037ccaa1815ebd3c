"""Bounds the calls a server serves at once; past the bound a call is refused, never queued.

A server that queues work it cannot do soon answers everyone late: the queue's wait is added
to every call, clients time out while the server still works for them, and useful
throughput collapses. Here a call over the limit is answered RESOURCE_EXHAUSTED at once,
before the servicer runs, with `grpc-retry-pushback-ms` in its trailing metadata so gRPC
retry policies and Nova's client wait before trying again. The limit is per server, fixed
or adaptive (see interceptors.server.limiters), and some methods can have a tighter fixed limit
of their own (a costly batch call must not crowd out the cheap ones). Streams take no slot:
one stays open as long as its client wants, so a few idle watches would hold the limit
against every unary call; interceptors.server.streams bounds them instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, NoReturn

import grpc

from interceptors.context import PUSHBACK_KEY
from interceptors.server.call import Abort, Call, Method, Rejected
from interceptors.server.limiters import (
    AdaptiveLimiter,
    AdaptiveSettings,
    FixedLimiter,
    Limiter,
    Outcome,
)

_DROPPED = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED})
# Module constants: an enum member looked up on its class runs Python code.
_OK = grpc.StatusCode.OK
_SUCCESS, _DROPPED_OUTCOME, _IGNORED = Outcome.SUCCESS, Outcome.DROPPED, Outcome.IGNORED


@dataclass(frozen=True)
class BackpressureSettings:
    limiter: Literal["fixed", "adaptive"] = "fixed"
    max_in_flight: int = 1000
    """The fixed limit, or the ceiling of the adaptive one. The default is a ceiling
    against runaway load (Envoy's default circuit breaker is 1024), not a tuned limit: a
    gateway resolving per field fans one request out into a hundred concurrent calls,
    which must pass. Protecting latency takes the adaptive limit or a measured value."""
    method_limits: Mapping[str, int] = field(default_factory=dict)
    """Fixed limits of single methods, e.g. {"/nova.user.v1.UserService/BatchGetUsers": 20}."""
    retry_pushback_ms: int = 100
    adaptive: AdaptiveSettings = field(default_factory=AdaptiveSettings)

    def __post_init__(self) -> None:
        if self.max_in_flight < 1 or self.retry_pushback_ms < 0:
            raise ValueError(f"need max_in_flight >= 1 and retry_pushback_ms >= 0: {self}")


def outcome_of(code: grpc.StatusCode) -> Outcome:
    """Only served calls measure latency; running out of time or of an inner resource (the
    database pool) says the server is overloaded; the rest say nothing about load."""
    if code is _OK:
        return _SUCCESS
    return _DROPPED_OUTCOME if code in _DROPPED else _IGNORED


class Backpressure:
    """The layer: admits a call or refuses it, and gives its slot back with its outcome."""

    def __init__(self, settings: BackpressureSettings, rejected: Rejected) -> None:
        self.limiter: Limiter = (
            AdaptiveLimiter(settings.adaptive, settings.max_in_flight)
            if settings.limiter == "adaptive"
            else FixedLimiter(settings.max_in_flight)
        )
        self._method_limiters: dict[str, Limiter] = {
            method: FixedLimiter(limit) for method, limit in settings.method_limits.items()
        }
        self._rejected = rejected
        self._retry_ms = settings.retry_pushback_ms
        self._pushback = ((PUSHBACK_KEY, str(settings.retry_pushback_ms)),)

    def for_method(self, method: Method) -> Callable[[Call], _Admitted] | None:
        if method.streams:
            return None
        return _Admitted(self, self._method_limiters.get(method.path)).admit

    def refuse(self, call: Call, reason: str, limiter: Limiter) -> NoReturn:
        """Answers RESOURCE_EXHAUSTED with the retry hint, for `limiter` being full."""
        method = call.method.path
        self._rejected(reason, method)
        what = "this server" if limiter is self.limiter else method
        raise Abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"overloaded: {what} is serving {limiter.in_flight} calls (limit {limiter.limit}); "
            f"retry after {self._retry_ms} ms",
            self._pushback,
        )


class _Admitted:
    """Admission to one method, within the server's limit and the method's own if it has
    one; the scope of every admitted call of it, which gives their slots back with their
    outcome and duration (the call carries all that differs)."""

    __slots__ = ("_layer", "_measured", "_own", "_server")

    def __init__(self, layer: Backpressure, own: Limiter | None) -> None:
        self._layer = layer
        self._server = layer.limiter
        self._own = own
        self._measured = isinstance(self._server, AdaptiveLimiter)
        """Whether a call's outcome is worth finding: only the adaptive limit learns from it
        (a method's own limit is a fixed one)."""

    def admit(self, call: Call) -> _Admitted:
        server, own = self._server, self._own
        # No await between a check and its count: nothing else runs in between.
        if not server.try_acquire():
            self._layer.refuse(call, "concurrency", server)
        if own is not None and not own.try_acquire():
            now = time.perf_counter()
            server.release(now, now, Outcome.IGNORED)
            self._layer.refuse(call, "method_concurrency", own)
        return self

    def end(self, call: Call, error: BaseException | None) -> None:
        outcome = outcome_of(call.status) if self._measured else _IGNORED
        self._server.release(call.started, call.finished, outcome)
        if self._own is not None:
            self._own.release(call.started, call.finished, outcome)
