"""Backpressure on a real server: waves of calls never push it past its limit, and the
calls over it are refused at once with a retry hint instead of waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import grpc
import pytest
from grpc import aio

from interceptors.context import PUSHBACK_KEY
from interceptors.server.backpressure import BackpressureSettings
from services.runtime.auth import TokenCodec
from services.runtime.server import chained_server
from services.runtime.server_layers import ServerLayers

CAP = 8
WAVES = 5
CALLS_PER_WAVE = 60
SERVICE_SECONDS = 0.3
TOKENS = TokenCodec(secret="backpressure-test-" + "x" * 32, ttl=timedelta(minutes=5))


class Slow:
    """A handler that holds each call for SERVICE_SECONDS, counting how many it holds."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0

    async def __call__(self, request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(SERVICE_SECONDS)
        finally:
            self.in_flight -= 1
        return b"done"


@dataclass
class Served:
    channel: aio.Channel
    handlers: Mapping[str, Slow]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    handlers = {"Slow": Slow(), "Costly": Slow()}
    settings = BackpressureSettings(
        max_in_flight=CAP, method_limits={"/test.Load/Costly": 2}, retry_pushback_ms=250
    )
    server = chained_server(TOKENS, ServerLayers(backpressure=settings))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Load",
                {name: grpc.unary_unary_rpc_method_handler(h) for name, h in handlers.items()},
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await channel.channel_ready()
        yield Served(channel, handlers)
    await server.stop(None)


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    seconds: float
    details: str
    pushback: str | bytes | None


async def call(channel: aio.Channel, method: str) -> Answer:
    started = time.perf_counter()
    try:
        await channel.unary_unary(f"/test.Load/{method}", None, None)(b"", timeout=10)
    except aio.AioRpcError as error:
        # grpc.aio answers an aio.Metadata mapping; grpc-stubs types the sync API's tuple.
        trailing = cast(Mapping[str, str | bytes], error.trailing_metadata())
        pushback = trailing.get(PUSHBACK_KEY)
        return Answer(error.code(), time.perf_counter() - started, error.details() or "", pushback)
    return Answer(grpc.StatusCode.OK, time.perf_counter() - started, "", None)


async def test_waves_of_calls_never_exceed_the_cap_and_the_excess_is_refused_at_once(
    served: Served,
) -> None:
    slow = served.handlers["Slow"]
    for _ in range(WAVES):
        answers = await asyncio.gather(
            *(call(served.channel, "Slow") for _ in range(CALLS_PER_WAVE))
        )
        served_ok = [a for a in answers if a.code == grpc.StatusCode.OK]
        refused = [a for a in answers if a.code != grpc.StatusCode.OK]
        assert len(served_ok) >= CAP
        assert len(refused) >= CALLS_PER_WAVE - 2 * CAP
        for answer in refused:
            assert answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert answer.pushback == "250"
            assert "retry after 250 ms" in answer.details
            # Refused without waiting for a slot: well before any served call ended.
            assert answer.seconds < SERVICE_SECONDS / 2
        assert slow.in_flight == 0
    assert slow.most == CAP


async def test_a_method_limit_holds_that_method_back_and_leaves_the_others_alone(
    served: Served,
) -> None:
    costly = [call(served.channel, "Costly") for _ in range(6)]
    cheap = [call(served.channel, "Slow") for _ in range(4)]
    answers = await asyncio.gather(*costly, *cheap)
    costly_codes = sorted(a.code.name for a in answers[:6])
    assert costly_codes == ["OK"] * 2 + ["RESOURCE_EXHAUSTED"] * 4
    assert all(a.code == grpc.StatusCode.OK for a in answers[6:])
    assert served.handlers["Costly"].most == 2
    refused = [a for a in answers[:6] if a.code != grpc.StatusCode.OK]
    assert all("/test.Load/Costly is serving 2 calls" in a.details for a in refused)
