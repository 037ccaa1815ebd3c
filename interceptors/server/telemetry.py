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

from collections.abc import Callable, Iterable

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Span

from interceptors.server.call import Call, Method
from interceptors.server.duration_histogram import DurationHistogram, Series
from interceptors.server.ids_only_tracer import IdsOnlySpan, IdsOnlyTracer, ids_only_span

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

_OK = grpc.StatusCode.OK
_SERVER = trace.SpanKind.SERVER
"""A module constant: an enum member looked up on its class runs Python code."""
_UNSAMPLED = (trace.NonRecordingSpan, IdsOnlySpan)
"""Span types that record nothing: `in` on a tuple of types compares identities, cheaper
than calling the span's is_recording."""


_IN_FLIGHT: dict[str, int] = {}
"""RPCs being served now in this process, by rpc.method: counted in a plain dict (a key is
added when a method is first served) and read only when metrics are collected, since two
SDK measurements per call would cost more than the rest of this layer. One dict for every
server of the process, because the SDK keeps only the first callback registered under an
instrument's name."""

CALL_DURATION = DurationHistogram(
    "rpc_server_call_duration_seconds",
    "Duration of served RPCs, refused ones included.",
    labelnames=("rpc_method", "rpc_response_status_code", "rpc_system_name"),
    buckets=_DURATION_BUCKETS,
)
"""`rpc.server.call.duration` as the OpenTelemetry Prometheus exporter names it, kept
outside the OpenTelemetry SDK: the SDK's `Histogram.record` cleans and hashes the
attributes on every call (12 µs here, a fifth of the whole chain), and even
prometheus_client's Histogram took 0.65 µs; a series bound once per method and code
(interceptors.server.duration_histogram) observes in ~0.1 µs. One for the process, like the
in-flight count; each scrape endpoint's registry collects it (services.runtime.metrics)."""


class RpcMetrics:
    """The server's instruments, shared by the layers that record into them."""

    def __init__(self, meter: Meter) -> None:
        self.duration = CALL_DURATION
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


class Telemetry:
    """The layer: a span, current while the call runs, its duration and its in-flight count."""

    def __init__(self, tracer: trace.Tracer, metrics: RpcMetrics) -> None:
        self.tracer = tracer
        self.metrics = metrics
        self.textmap: TextMapPropagator | None = None
        """The process's propagator when `fields` were read from it."""
        self.fields: frozenset[str] = frozenset()
        """The metadata keys it reads."""

    def for_method(self, method: Method) -> Callable[[Call], _Method]:
        return _Method(self, method.name).begin

    def learn(self, textmap: TextMapPropagator) -> None:
        self.textmap, self.fields = textmap, frozenset(textmap.fields)


_NO_PARENT = otel_context.Context()
"""The context of a call whose caller sent no trace: a new trace begins."""


class _Method:
    """What telemetry keeps of one method (its name, attributes and series, built once);
    the scope of every call of it, whose span the call carries (Call.span)."""

    __slots__ = (
        "attributes",
        "by_code",
        "ids_only",
        "in_flight",
        "layer",
        "name",
        "served",
        "tracer",
    )

    served: Series
    by_code: dict[grpc.StatusCode, Series]

    def __init__(self, layer: Telemetry, name: str) -> None:
        self.layer = layer
        self.tracer = layer.tracer
        self.ids_only = type(layer.tracer) is IdsOnlyTracer
        """Spans from the ids-only tracer are made without going through its start_span,
        whose arguments it ignores, and give their ids as text at once."""
        self.name = name
        self.attributes = {"rpc.system.name": "grpc", "rpc.method": name}
        self.in_flight = layer.metrics.in_flight
        self.in_flight.setdefault(name, 0)
        self.served = layer.metrics.duration.labels(name, _OK.name, "grpc")
        self.by_code = {}
        """The duration's series, by status code."""

    def begin(self, call: Call) -> _Method:
        # The caller's trace context, or an empty one (a new trace) when it sent none. A
        # call whose metadata has none of the propagator's fields skips it: its extract
        # reads only those (W3C trace context and baggage do), and asking it costs more
        # than the rest of this layer. Binary values only sit under `-bin` keys, which no
        # text propagator reads, so the metadata is passed as it is.
        layer, metadata = self.layer, call.metadata
        textmap = propagate.get_global_textmap()
        if textmap is not layer.textmap:
            layer.learn(textmap)
        parent = _NO_PARENT if layer.fields.isdisjoint(metadata) else textmap.extract(metadata)
        span: Span
        if self.ids_only:
            span = ids_only_span(parent)
            call.trace_ids = span.hex_ids()
        else:
            span = self.tracer.start_span(
                self.name, parent, kind=_SERVER, attributes=self.attributes
            )
            ids = span.get_span_context()
            if ids.is_valid:
                call.trace_ids = (ids.trace_id.to_bytes(16).hex(), ids.span_id.to_bytes(8).hex())
        # No token is kept to detach: grpc.aio runs every call in a task of its own, so
        # what a call attaches ends with it.
        otel_context.attach(trace.set_span_in_context(span, parent))
        call.span = span
        self.in_flight[self.name] += 1
        return self

    def end(self, call: Call, error: BaseException | None) -> None:
        code = call.status
        self.in_flight[self.name] -= 1
        if code is _OK:  # most calls: no hashing of the enum, which Python code does
            self.served.observe(call.seconds)
        else:
            self.duration(code).observe(call.seconds)
        span = call.span
        # Unsampled spans (the process records none yet) take no attributes and no end;
        # the type check first saves the call of the usual one's is_recording.
        if span is not None and type(span) not in _UNSAMPLED and span.is_recording():
            span.set_attribute("rpc.response.status_code", code.name)
            if code in _SERVER_FAULTS:
                span.set_attribute("error.type", code.name)
                span.set_status(trace.StatusCode.ERROR)
            span.end()

    def duration(self, code: grpc.StatusCode) -> Series:
        series = self.by_code.get(code)
        if series is None:
            series = self.layer.metrics.duration.labels(self.name, code.name, "grpc")
            self.by_code[code] = series
        return series
