"""What a server handler sees of the calling context: deadline, trace, caller, request id."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from grpc import aio
from opentelemetry import context as otel_context
from opentelemetry import trace

from interceptors import context
from interceptors.client.stack import connect
from nova.user.v1 import user_pb2, user_pb2_grpc
from tests.integration.test_client_fakes import replica

GET = user_pb2.GetUserRequest(handle="grace")
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
ROUNDING = 1.02
"""gRPC rounds the timeout it sends up, to a few significant digits."""


@contextmanager
def serving(deadline: float, request_id: str, authorization: str) -> Iterator[None]:
    """What the server interceptors set while an RPC is being served, and an active span."""
    span = trace.NonRecordingSpan(
        trace.SpanContext(TRACE_ID, SPAN_ID, is_remote=True, trace_flags=trace.TraceFlags(1))
    )
    attached = otel_context.attach(trace.set_span_in_context(span))
    tokens = (
        context.deadline.set(deadline),
        context.request_id.set(request_id),
        context.authorization.set(authorization),
    )
    try:
        yield
    finally:
        context.authorization.reset(tokens[2])
        context.request_id.reset(tokens[1])
        context.deadline.reset(tokens[0])
        otel_context.detach(attached)


async def test_the_handler_sees_the_calling_rpcs_deadline_trace_caller_and_request_id() -> None:
    async with replica() as backend, connect("users", [backend.address]) as client:
        users = client.stub(user_pb2_grpc.UserServiceStub)
        with serving(time.monotonic() + 2, "req-42", "Bearer caller-token"):
            await users.GetUser(GET, timeout=30)
        (seen,) = backend.servicer.seen
        assert seen.time_remaining is not None
        assert 1.5 < seen.time_remaining <= 2 * ROUNDING
        assert seen.metadata["traceparent"] == f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"
        assert seen.metadata["authorization"] == "Bearer caller-token"
        assert seen.metadata["x-request-id"] == "req-42"


async def test_a_calls_own_metadata_and_shorter_timeout_win() -> None:
    async with replica() as backend, connect("users", [backend.address]) as client:
        users = client.stub(user_pb2_grpc.UserServiceStub)
        own = (("authorization", "Bearer service-token"), ("x-request-id", "own-id"))
        with serving(time.monotonic() + 20, "req-42", "Bearer caller-token"):
            await users.GetUser(GET, timeout=0.5, metadata=own)
        (seen,) = backend.servicer.seen
        assert seen.time_remaining is not None
        assert seen.time_remaining <= 0.5 * ROUNDING
        assert seen.metadata["authorization"] == "Bearer service-token"
        assert seen.metadata["x-request-id"] == "own-id"


async def test_outside_any_rpc_a_call_gets_a_default_timeout_and_a_fresh_request_id() -> None:
    async with replica() as backend, connect("users", [backend.address]) as client:
        await client.stub(user_pb2_grpc.UserServiceStub).GetUser(GET)
        (seen,) = backend.servicer.seen
        assert seen.time_remaining is not None
        assert 9 < seen.time_remaining <= 10 * ROUNDING
        assert len(seen.metadata["x-request-id"]) == 32
        assert "authorization" not in seen.metadata
        assert "traceparent" not in seen.metadata


async def test_a_call_after_the_deadline_passed_is_not_sent() -> None:
    async with replica() as backend, connect("users", [backend.address]) as client:
        with (
            serving(time.monotonic() - 0.01, "req-42", "Bearer caller-token"),
            pytest.raises(aio.AioRpcError) as late,
        ):
            await client.stub(user_pb2_grpc.UserServiceStub).GetUser(GET, timeout=5)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert backend.servicer.seen == []
