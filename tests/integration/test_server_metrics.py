"""The Prometheus endpoint, scraped over HTTP while a real server serves and refuses calls."""

from __future__ import annotations

import asyncio
import io
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import pytest
from grpc import aio
from prometheus_client.parser import text_string_to_metric_families

from interceptors.server.backpressure import BackpressureSettings
from interceptors.server.deadlines import DeadlineSettings
from services.runtime.auth import TokenCodec
from services.runtime.db import open_database
from services.runtime.errors import ResourceExhausted
from services.runtime.logs import LineBuffer
from services.runtime.metrics import MetricsEndpoint, prometheus_endpoint
from services.runtime.server import chained_server
from services.runtime.server_layers import ServerLayers

TOKENS = TokenCodec(secret="metrics-test-" + "x" * 32, ttl=timedelta(minutes=5))
SLEEP = "test.Metered/Sleep"


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@pytest.fixture(scope="module")
def endpoint() -> Iterator[MetricsEndpoint]:
    with prometheus_endpoint("127.0.0.1", 0) as opened:
        yield opened


async def scrape(endpoint: MetricsEndpoint) -> list[Sample]:
    url = f"http://127.0.0.1:{endpoint.port}/metrics"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get() -> str:
        with opener.open(url, timeout=5) as response:
            text: str = response.read().decode()
            return text

    families = text_string_to_metric_families(await asyncio.to_thread(get))
    return [Sample(s.name, s.labels, s.value) for f in families for s in f.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    for sample in samples:
        if sample.name == name and labels.items() <= sample.labels.items():
            return sample.value
    return None


HELD = asyncio.Event()
"""Calls to Sleep last until it is set (by a test, or after 10 s)."""


async def sleep(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
    await asyncio.wait_for(HELD.wait(), 10)
    return b"woke"


async def scrape_until_in_flight(endpoint: MetricsEndpoint, *methods: str) -> list[Sample]:
    """Samples once each method has a call in flight (a loaded machine may take a while)."""
    for _ in range(250):
        samples = await scrape(endpoint)
        if all(value(samples, "nova_rpc_server_in_flight", rpc_method=m) == 1 for m in methods):
            return samples
        await asyncio.sleep(0.02)
    raise AssertionError(f"no call of {methods} came in flight")


@asynccontextmanager
async def metered_server(endpoint: MetricsEndpoint, service: str) -> AsyncIterator[aio.Channel]:
    chain = ServerLayers(
        deadlines=DeadlineSettings(minimum_seconds=0.2),
        backpressure=BackpressureSettings(max_in_flight=1),
    )
    server = chained_server(TOKENS, chain, meter_provider=endpoint.meter_provider)
    handlers = {"Sleep": grpc.unary_unary_rpc_method_handler(sleep)}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened
    await server.stop(None)


@pytest.fixture
async def channel(endpoint: MetricsEndpoint) -> AsyncIterator[aio.Channel]:
    async with metered_server(endpoint, "test.Metered") as opened:
        yield opened


async def test_duration_in_flight_and_refusals_by_reason_are_scraped_with_their_labels(
    endpoint: MetricsEndpoint, channel: aio.Channel
) -> None:
    call = channel.unary_unary(f"/{SLEEP}", None, None)

    async def served_call() -> None:
        await call(b"")

    HELD.clear()
    started = asyncio.get_running_loop().time()
    served = asyncio.create_task(served_call())
    during = await scrape_until_in_flight(endpoint, SLEEP)
    for timeout in (5.0, 0.1):  # over the concurrency limit; too short a deadline
        with pytest.raises(aio.AioRpcError):
            await call(b"", timeout=timeout)
    # Served for at least 0.3 s, so its duration falls past the 0.25 s bucket.
    await asyncio.sleep(max(0.0, started + 0.3 - asyncio.get_running_loop().time()))
    HELD.set()
    await served
    after = await scrape(endpoint)

    method = {"rpc_method": SLEEP, "rpc_system_name": "grpc"}
    assert value(during, "nova_rpc_server_in_flight", **method) == 1
    assert value(after, "nova_rpc_server_in_flight", **method) == 0
    ok = {**method, "rpc_response_status_code": "OK"}
    assert value(after, "rpc_server_call_duration_seconds_count", **ok) == 1
    assert value(after, "rpc_server_call_duration_seconds_bucket", le="0.25", **ok) == 0
    assert value(after, "rpc_server_call_duration_seconds_bucket", le="2.5", **ok) == 1
    refused = {**method, "rpc_response_status_code": "RESOURCE_EXHAUSTED"}
    assert value(after, "rpc_server_call_duration_seconds_count", **refused) == 1
    for reason in ("concurrency", "deadline"):
        labels = {"reason": reason, "rpc_method": SLEEP}
        assert value(after, "nova_rpc_server_rejections_total", **labels) == 1


async def test_every_server_of_the_process_shows_its_calls_in_flight(
    endpoint: MetricsEndpoint,
) -> None:
    async with (
        metered_server(endpoint, "test.First") as first,
        metered_server(endpoint, "test.Second") as second,
    ):

        async def sleep_on(channel: aio.Channel, method: str) -> None:
            await channel.unary_unary(method, None, None)(b"")

        HELD.clear()
        calls = [
            asyncio.create_task(sleep_on(first, "/test.First/Sleep")),
            asyncio.create_task(sleep_on(second, "/test.Second/Sleep")),
        ]
        samples = await scrape_until_in_flight(endpoint, "test.First/Sleep", "test.Second/Sleep")
        HELD.set()
        await asyncio.gather(*calls)
    for method in ("test.First/Sleep", "test.Second/Sleep"):
        assert value(samples, "nova_rpc_server_in_flight", rpc_method=method) == 1


async def test_an_exhausted_database_pool_is_counted(
    endpoint: MetricsEndpoint, database_url: str
) -> None:
    meter = endpoint.meter_provider.get_meter("nova.db")
    async with (
        open_database(database_url, size=1, acquire_timeout_ms=20, meter=meter) as db,
        db.connection(),
    ):
        with pytest.raises(ResourceExhausted):
            async with db.connection():
                pass
    assert value(await scrape(endpoint), "nova_db_pool_exhausted_total") == 1


async def test_log_lines_dropped_are_counted(endpoint: MetricsEndpoint) -> None:
    before = value(await scrape(endpoint), "nova_log_lines_dropped_total") or 0
    closed = io.BytesIO()
    closed.close()
    buffer = LineBuffer(closed)
    buffer.msg(b"lost")
    buffer.msg(b"lost too")
    buffer.flush()
    assert value(await scrape(endpoint), "nova_log_lines_dropped_total") == before + 2
