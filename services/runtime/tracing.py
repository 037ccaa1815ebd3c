"""The tracer a process uses while it exports no spans: ids without the SDK's span work.

Nova records no spans yet (no exporter is configured), but every log line and every
downstream call carries a trace id and a span id, so a request can be followed across
services. With the SDK's TracerProvider and the ALWAYS_OFF sampler each span still went
through the SDK's sampling and id machinery (4.7 µs per span, the largest part of the
server's telemetry layer). This provider returns what that SDK returns for a span its
sampler drops: a NonRecordingSpan with a new span id and the parent's trace id (or a new
one), flags "not sampled". When spans are exported, the SDK's provider replaces it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from random import getrandbits

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

_NOT_SAMPLED = trace.TraceFlags(trace.TraceFlags.DEFAULT)


class IdsOnlyTracerProvider(trace.TracerProvider):
    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> trace.Tracer:
        return _TRACER


class IdsOnlyTracer(trace.Tracer):
    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        # An empty context (a server call whose caller sent no trace) has no parent: the
        # usual lookup through the API's functions took a third of this method.
        if context is not None and not context:
            return _span(getrandbits(128) or _nonzero(128), _NO_TRACE_STATE)
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            return _span(parent.trace_id, parent.trace_state)
        return _span(getrandbits(128) or _nonzero(128), _NO_TRACE_STATE)

    # The API declares its own (private) context-manager type; a plain one behaves the same.
    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, context)
        with trace.use_span(span, end_on_exit=end_on_exit) as current:
            yield current


_NO_TRACE_STATE = trace.TraceState.get_default()


def _span(trace_id: int, trace_state: trace.TraceState) -> trace.Span:
    """A span of the trace `trace_id`, with a new span id.

    Its SpanContext is built as the tuple SpanContext.__new__ builds, without that
    method's argument checks and range comparisons, which took a third of a server call's
    span: the ids here are in range by construction (getrandbits, never 0), so the
    context is valid. tests/unit/test_tracing.py checks it equals the constructor's.
    """
    span_id = getrandbits(64) or _nonzero(64)
    fields = (trace_id, span_id, False, _NOT_SAMPLED, trace_state, True)
    return trace.NonRecordingSpan(tuple.__new__(trace.SpanContext, fields))


def _nonzero(bits: int) -> int:
    """A random id of `bits` bits, never 0 (the invalid id), as the SDK's generator; for
    the once in 2**bits that getrandbits gave 0."""
    while True:
        value = getrandbits(bits)
        if value:
            return value


_TRACER = IdsOnlyTracer()
