"""Bounds the calls a server serves at once; past the bound a call is refused, never queued.

A server that queues work it cannot do soon answers everyone late: the queue's wait is added
to every call, clients time out while the server still works for them, and useful
throughput collapses. Here a call over the limit is answered RESOURCE_EXHAUSTED at once,
before the servicer runs, with `grpc-retry-pushback-ms` in its trailing metadata so gRPC
retry policies and Nova's client wait before trying again. The limit is per server, fixed
or adaptive (see interceptors.limiters), and some methods can have a tighter fixed limit
of their own (a costly batch call must not crowd out the cheap ones).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import Any, Literal, NoReturn

import grpc
from grpc import aio

from interceptors._handlers import ServerInterceptor, wrap_handler
from interceptors._status import final_code
from interceptors.limiters import AdaptiveLimiter, AdaptiveSettings, FixedLimiter, Limiter, Outcome

PUSHBACK_KEY = "grpc-retry-pushback-ms"

Rejected = Callable[[str, str], None]
"""Told (reason, method) of each call refused, e.g. to count it."""

_DROPPED = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED})


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
    if code is grpc.StatusCode.OK:
        return Outcome.SUCCESS
    return Outcome.DROPPED if code in _DROPPED else Outcome.IGNORED


class BackpressureInterceptor(ServerInterceptor):
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

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        own = self._method_limiters.get(method)
        return wrap_handler(handler, partial(_Admitted, self, method, own))

    async def refuse(
        self, context: aio.ServicerContext[Any, Any], reason: str, method: str, limiter: Limiter
    ) -> NoReturn:
        """Answers RESOURCE_EXHAUSTED with the retry hint, for `limiter` being full."""
        self._rejected(reason, method)
        what = "this server" if limiter is self.limiter else method
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"overloaded: {what} is serving {limiter.in_flight} calls (limit {limiter.limit}); "
            f"retry after {self._retry_ms} ms",
            trailing_metadata=self._pushback,
        )


class _Admitted:
    """One call: admitted on entry or refused, its slot given back with its outcome on exit.

    A class, not @asynccontextmanager: every RPC enters one, and this costs a third less.
    """

    __slots__ = ("_context", "_interceptor", "_method", "_own", "_started")

    def __init__(
        self,
        interceptor: BackpressureInterceptor,
        method: str,
        own: Limiter | None,
        context: aio.ServicerContext[Any, Any],
    ) -> None:
        self._interceptor = interceptor
        self._method = method
        self._own = own
        self._context = context

    async def __aenter__(self) -> None:
        interceptor, own = self._interceptor, self._own
        server = interceptor.limiter
        # No await between a check and its count: nothing else runs in between.
        if not server.try_acquire():
            await interceptor.refuse(self._context, "concurrency", self._method, server)
        if own is not None and not own.try_acquire():
            now = time.perf_counter()
            server.release(now, now, Outcome.IGNORED)
            await interceptor.refuse(self._context, "method_concurrency", self._method, own)
        self._started = time.perf_counter()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        finished = time.perf_counter()
        outcome = outcome_of(final_code(self._context, error))
        self._interceptor.limiter.release(self._started, finished, outcome)
        if self._own is not None:
            self._own.release(self._started, finished, outcome)
