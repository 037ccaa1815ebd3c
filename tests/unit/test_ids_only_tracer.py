"""The ids-only tracer: spans with real ids that continue the caller's trace, as the SDK
gives for spans it does not record, and that become current inside start_as_current_span."""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from interceptors.server.ids_only_tracer import IdsOnlyTracerProvider, ids_only_span

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACER = IdsOnlyTracerProvider().get_tracer("test")


def test_a_root_span_gets_a_new_trace_and_span_id_and_is_not_sampled() -> None:
    first = TRACER.start_span("a").get_span_context()
    second = TRACER.start_span("b").get_span_context()
    assert first.is_valid
    assert second.is_valid
    assert first.trace_id != second.trace_id
    assert not first.trace_flags.sampled
    assert not TRACER.start_span("c").is_recording()


def test_a_child_continues_the_callers_trace_with_a_span_id_of_its_own() -> None:
    parent = TraceContextTextMapPropagator().extract(
        {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
    )
    span = TRACER.start_span("server", parent, kind=trace.SpanKind.SERVER).get_span_context()
    assert trace.format_trace_id(span.trace_id) == TRACE_ID
    assert trace.format_span_id(span.span_id) != "00f067aa0ba902b7"


def test_start_as_current_span_makes_it_current_for_what_runs_inside() -> None:
    with TRACER.start_as_current_span("work") as span:
        assert trace.get_current_span() is span
        inner = TRACER.start_span("inner").get_span_context()
    assert inner.trace_id == span.get_span_context().trace_id
    assert trace.get_current_span() is not span


def test_an_empty_context_starts_a_new_trace_even_inside_a_current_span() -> None:
    with TRACER.start_as_current_span("outer") as outer:
        span = TRACER.start_span("server", otel_context.Context()).get_span_context()
        child = TRACER.start_span("child").get_span_context()
    assert span.is_valid
    assert span.trace_id != outer.get_span_context().trace_id
    assert child.trace_id == outer.get_span_context().trace_id


def test_span_contexts_are_valid_unsampled_and_keep_the_callers_trace_state() -> None:
    """What a span's SpanContext says, for a root span, an empty context and a child."""
    parent = TraceContextTextMapPropagator().extract(
        {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01", "tracestate": "vendor=value"}
    )
    for context in (None, otel_context.Context(), parent):
        built = TRACER.start_span("server", context).get_span_context()
        checked = trace.SpanContext(
            built.trace_id,
            built.span_id,
            is_remote=False,
            trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT),
            trace_state=built.trace_state,
        )
        assert built == checked
        assert (built.is_valid, built.is_remote, built.trace_flags) == (True, False, 0)
    assert TRACER.start_span("child", parent).get_span_context().trace_state == {"vendor": "value"}


def test_hex_ids_are_the_span_contexts_ids_as_w3c_writes_them() -> None:
    parent = TraceContextTextMapPropagator().extract(
        {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
    )
    for context in (None, otel_context.Context(), parent):
        span = ids_only_span(context)
        ids = span.get_span_context()
        assert span.hex_ids() == (
            trace.format_trace_id(ids.trace_id),
            trace.format_span_id(ids.span_id),
        )
        assert span.get_span_context() is ids
    assert ids_only_span(parent).hex_ids()[0] == TRACE_ID
    assert repr(span) == f"IdsOnlySpan({span.get_span_context()!r})"
