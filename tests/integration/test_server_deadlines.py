"""Deadlines on a real server: a default for calls without one, carried in
interceptors.context, and calls with too little time left refused before any work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from grpc import aio

from interceptors import context as rpc
from interceptors.server.deadlines import DeadlineSettings
from services.runtime.auth import TokenCodec
from services.runtime.server import chained_server
from services.runtime.server_layers import ServerLayers

TOKENS = TokenCodec(secret="deadline-test-" + "x" * 32, ttl=timedelta(minutes=5))
SETTINGS = DeadlineSettings(default_seconds=0.5, minimum_seconds=0.2)

ran: list[str] = []


async def remaining(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
    ran.append("remaining")
    return repr(rpc.remaining_seconds()).encode()


async def sleep(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
    ran.append("sleep")
    await asyncio.sleep(float(request))
    return b"woke"


async def watch(request: bytes, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
    yield repr(rpc.remaining_seconds()).encode()


@pytest.fixture
async def channel() -> AsyncIterator[aio.Channel]:
    ran.clear()
    chain = ServerLayers(deadlines=SETTINGS)
    server = chained_server(TOKENS, chain)
    handlers = {
        "Remaining": grpc.unary_unary_rpc_method_handler(remaining),
        "Sleep": grpc.unary_unary_rpc_method_handler(sleep),
        "Watch": grpc.unary_stream_rpc_method_handler(watch),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Time", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened
    await server.stop(None)


async def test_a_call_without_a_deadline_gets_the_default(channel: aio.Channel) -> None:
    seconds = float(await channel.unary_unary("/test.Time/Remaining", None, None)(b""))
    assert 0.3 < seconds <= 0.5


async def test_the_callers_deadline_is_carried_as_it_is(channel: aio.Channel) -> None:
    seconds = float(await channel.unary_unary("/test.Time/Remaining", None, None)(b"", timeout=30))
    assert 25 < seconds <= 31  # not to the millisecond: grpc recomputes it on its side


async def test_the_default_deadline_is_enforced(channel: aio.Channel) -> None:
    with pytest.raises(aio.AioRpcError) as error:
        await asyncio.wait_for(
            channel.unary_unary("/test.Time/Sleep", None, None)(b"10"), timeout=5
        )
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "ran past the server's default of 0.5 s" in (error.value.details() or "")


async def test_too_little_time_left_is_refused_before_the_handler_runs(
    channel: aio.Channel,
) -> None:
    with pytest.raises(aio.AioRpcError) as error:
        await channel.unary_unary("/test.Time/Sleep", None, None)(b"0", timeout=0.1)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server's own answer, not the client giving up at its deadline.
    assert "needs at least 200 ms" in (error.value.details() or "")
    assert ran == []


async def test_a_streaming_response_without_a_deadline_stays_unbounded(
    channel: aio.Channel,
) -> None:
    replies = [r async for r in channel.unary_stream("/test.Time/Watch", None, None)(b"")]
    assert replies == [b"None"]
