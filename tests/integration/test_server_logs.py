"""The JSON log of a real server: one line per RPC with the ids of its span, and one error
line with the stack for a bug, which the client only sees as INTERNAL and a request id."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import pytest
import structlog
from grpc import aio
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.runtime.auth import Caller, TokenCodec
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.logs import configure_logging, flush
from services.runtime.server import chained_server
from services.runtime.server_layers import ServerLayers

TOKENS = TokenCodec(secret="logs-test-" + "x" * 32, ttl=timedelta(minutes=5))
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
PAYLOAD = b"payload-that-must-not-be-logged"

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def log_lines() -> Iterator[Lines]:
    """Every line written while the test runs, each parsed as JSON (or failing the test)."""
    root = logging.getLogger()
    level = root.level
    stream = io.BytesIO()
    handler = configure_logging("INFO", stream)

    def lines() -> list[dict[str, Any]]:
        flush()  # lines wait up to 10 ms for the buffer's timer; this test reads at once
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield lines
    root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


async def echo(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
    return request


async def crash(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
    raise RuntimeError("database password is hunter2")


@dataclass
class Served:
    channel: aio.Channel
    spans: InMemorySpanExporter


@pytest.fixture
async def served(log_lines: Lines) -> AsyncIterator[Served]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    server = chained_server(TOKENS, ServerLayers(), tracer_provider=provider)
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Crash": grpc.unary_unary_rpc_method_handler(crash),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Obs", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Served(channel, spans)
    await server.stop(None)


def ids(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


async def test_every_rpc_writes_one_json_line_carrying_the_ids_of_its_span(
    served: Served, log_lines: Lines
) -> None:
    user_id = uuid.uuid4()
    token, _ = TOKENS.issue(Caller(user_id=user_id, tenant_id=DEFAULT_TENANT_ID, handle="ada"))
    echo_call = served.channel.unary_unary("/test.Obs/Echo", None, None)
    await echo_call(PAYLOAD, metadata=(("x-request-id", "r-plain"),))
    traceparent = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
    await echo_call(PAYLOAD, metadata=(("x-request-id", "r-traced"), ("traceparent", traceparent)))
    await echo_call(
        PAYLOAD, metadata=(("x-request-id", "r-signed-in"), ("authorization", f"Bearer {token}"))
    )

    lines = log_lines()
    spans = served.spans.get_finished_spans()
    assert [line["request_id"] for line in lines] == ["r-plain", "r-traced", "r-signed-in"]
    assert [(line["trace_id"], line["span_id"]) for line in lines] == [ids(s) for s in spans]
    for line in lines:
        assert line["time"].endswith("Z")
        assert line["level"] == "info"
        assert line["event"] == "rpc"
        assert (line["service"], line["method"], line["code"]) == ("test.Obs", "Echo", "OK")
        assert line["peer"].startswith("ipv4:127.0.0.1:")
        assert line["duration_ms"] >= 0
    assert [line["caller_id"] for line in lines] == [None, None, str(user_id)]
    assert PAYLOAD.decode() not in json.dumps(lines)

    # The caller's trace goes on in the server span.
    assert lines[1]["trace_id"] == TRACE_ID
    assert spans[1].parent is not None
    assert trace.format_span_id(spans[1].parent.span_id) == PARENT_SPAN_ID
    assert spans[0].kind == trace.SpanKind.SERVER
    assert spans[0].name == "test.Obs/Echo"
    assert spans[0].attributes == {
        "rpc.system.name": "grpc",
        "rpc.method": "test.Obs/Echo",
        "rpc.response.status_code": "OK",
    }


async def test_a_call_sent_without_a_request_id_takes_its_trace_id_as_one(
    served: Served, log_lines: Lines
) -> None:
    echo_call = served.channel.unary_unary("/test.Obs/Echo", None, None)
    await echo_call(PAYLOAD)
    await echo_call(PAYLOAD)
    await echo_call(PAYLOAD, metadata=(("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"),))
    await echo_call(PAYLOAD, metadata=(("x-request-id", "x" * 129),))  # too long to keep
    lines = log_lines()
    assert [line["request_id"] for line in lines] == [line["trace_id"] for line in lines]
    assert lines[0]["request_id"] != lines[1]["request_id"]
    assert lines[2]["request_id"] == TRACE_ID


async def test_a_bug_gives_one_error_line_with_its_stack_and_the_client_a_request_id_only(
    served: Served, log_lines: Lines
) -> None:
    with pytest.raises(aio.AioRpcError) as error:
        await served.channel.unary_unary("/test.Obs/Crash", None, None)(
            b"", metadata=(("x-request-id", "req-42"),)
        )
    assert error.value.code() == grpc.StatusCode.INTERNAL
    assert error.value.details() == "internal error; quote request id req-42 when reporting it"

    # The status is sent before the layers outside the error mapping end (the chain
    # answers an Abort first), so the access line may follow the client's answer.
    for _ in range(100):
        if len(log_lines()) >= 2:
            break
        await asyncio.sleep(0.01)
    (span,) = served.spans.get_finished_spans()
    assert span.status.status_code == trace.StatusCode.ERROR
    stack, access = log_lines()
    assert stack["level"] == "error"
    assert stack["logger"] == "nova.errors"
    assert stack["exception"].startswith("Traceback (most recent call last)")
    assert "RuntimeError: database password is hunter2" in stack["exception"]
    assert (access["level"], access["code"]) == ("warning", "INTERNAL")
    for line in (stack, access):
        assert line["request_id"] == "req-42"
        assert (line["trace_id"], line["span_id"]) == ids(span)


async def test_access_lines_follow_the_level_and_stream_logging_was_last_configured_with(
    served: Served, log_lines: Lines
) -> None:
    echo_call = served.channel.unary_unary("/test.Obs/Echo", None, None)
    await echo_call(PAYLOAD)  # at INFO, into the fixture's stream
    assert [line["code"] for line in log_lines()] == ["OK"]

    stream = io.BytesIO()
    handler = configure_logging("WARNING", stream)
    try:
        await echo_call(PAYLOAD)  # OK is info: below the level, no line
        with pytest.raises(aio.AioRpcError):
            await served.channel.unary_unary("/test.Obs/Crash", None, None)(b"")
        for _ in range(100):  # the access line may follow the client's answer (see above)
            flush()
            if len(stream.getvalue().splitlines()) >= 2:
                break
            await asyncio.sleep(0.01)
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logging.getLogger().removeHandler(handler)
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("nova.errors", "error"),
        ("nova.access", "warning"),
    ]
    assert lines[1]["code"] == "INTERNAL"
    assert len(log_lines()) == 1  # the first stream got nothing more
