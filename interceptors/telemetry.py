"""OpenTelemetry for served RPCs: a server span per call, duration, in-flight and rejections.

The span continues the caller's trace from W3C `traceparent` metadata (through the
configured propagator) and is current while the call runs, so every log line written
inside it, and every call made downstream, carries its trace. Names and attributes follow
the stable RPC semantic conventions (`rpc.server.call.duration` in seconds, `rpc.method`
as package.Service/Method, `rpc.response.status_code` by name), so dashboards built for
them work. Only the API is used here; the process decides (services.runtime.metrics)
which SDK, exporters and scrape endpoint stand behind it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from types import TracebackType
from typing import Any

import grpc
from grpc import aio
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from interceptors._handlers import ServerInterceptor, wrap_handler
from interceptors._status import final_code

_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Seconds; the SDK's default buckets are made for milliseconds."""

_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""Codes that mark a server span as an error (semantic conventions for gRPC)."""


_IN_FLIGHT: Counter[str] = Counter()
"""RPCs being served now in this process, by rpc.method: counted in a plain dict and read
only when metrics are collected, since two SDK measurements per call would cost more than
the rest of this layer. One dict for every server of the process, because the SDK keeps
only the first callback registered under an instrument's name."""


class RpcMetrics:
    """The server's instruments, shared by the layers that record into them."""

    def __init__(self, meter: Meter) -> None:
        self.duration = meter.create_histogram(
            "rpc.server.call.duration",
            unit="s",
            description="Duration of served RPCs, refused ones included.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.in_flight = _IN_FLIGHT
        meter.create_observable_up_down_counter(
            "nova.rpc.server.in_flight",
            callbacks=[_observe_in_flight],
            unit="{call}",
            description="RPCs being served now.",
        )
        self._rejections = meter.create_counter(
            "nova.rpc.server.rejections",
            unit="{call}",
            description="RPCs refused before any work, by reason.",
        )

    def rejected(self, reason: str, method: str) -> None:
        self._rejections.add(1, {"reason": reason, "rpc.method": method.lstrip("/")})


def _observe_in_flight(options: CallbackOptions) -> Iterable[Observation]:
    # Called from the exporter's thread: list() copies the items in one step.
    for method, count in list(_IN_FLIGHT.items()):
        yield Observation(count, {"rpc.system.name": "grpc", "rpc.method": method})


class TelemetryInterceptor(ServerInterceptor):
    def __init__(self, tracer: trace.Tracer, metrics: RpcMetrics) -> None:
        self._tracer = tracer
        self._metrics = metrics

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
        return wrap_handler(handler, partial(_Observed, self._tracer, self._metrics, details))


class _Observed:
    """One call: its span, current while it runs, its duration and its in-flight count.

    A class, not @asynccontextmanager: every RPC enters one, and this costs a third less.
    """

    __slots__ = (
        "_attributes",
        "_context",
        "_details",
        "_metrics",
        "_span",
        "_started",
        "_token",
        "_tracer",
    )

    def __init__(
        self,
        tracer: trace.Tracer,
        metrics: RpcMetrics,
        details: grpc.HandlerCallDetails,
        context: aio.ServicerContext[Any, Any],
    ) -> None:
        self._tracer = tracer
        self._metrics = metrics
        self._details = details
        self._context = context

    async def __aenter__(self) -> None:
        details = self._details
        name = details.method.lstrip("/")
        carrier = {
            key: value for key, value in details.invocation_metadata or () if isinstance(value, str)
        }
        parent = propagate.extract(carrier)
        self._attributes = {"rpc.system.name": "grpc", "rpc.method": name}
        self._span = self._tracer.start_span(
            name, parent, kind=trace.SpanKind.SERVER, attributes=self._attributes
        )
        self._token = otel_context.attach(trace.set_span_in_context(self._span, parent))
        self._metrics.in_flight[name] += 1
        self._started = time.perf_counter()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed = time.perf_counter() - self._started
        code = final_code(self._context, error)
        self._metrics.in_flight[self._attributes["rpc.method"]] -= 1
        self._metrics.duration.record(
            elapsed, {**self._attributes, "rpc.response.status_code": code.name}
        )
        span = self._span
        span.set_attribute("rpc.response.status_code", code.name)
        if code in _SERVER_FAULTS:
            span.set_attribute("error.type", code.name)
            span.set_status(trace.StatusCode.ERROR)
        span.end()
        otel_context.detach(self._token)
