"""The open-loop generator against local callables whose timing the test controls.

Bounds on latency are lower bounds the callables impose (a sleep, a lock), never claims
about how fast the generator itself runs.
"""

import asyncio
import itertools
import time

import grpc
from grpc import aio

from tests.bench.loadgen import CLIENT_OVERLOADED, CLIENT_TIMEOUT, Load, generate


async def test_launches_every_scheduled_call_and_measures_only_after_the_warm_up() -> None:
    started = 0

    async def call() -> None:
        nonlocal started
        started += 1
        await asyncio.sleep(0.001)

    begin = time.perf_counter()
    result = await generate(call, Load(rate=200, duration=0.5, warmup=0.1, max_outstanding=100))
    elapsed = time.perf_counter() - begin

    assert abs(started - 120) <= 1
    assert abs(result.scheduled - 100) <= 1
    assert result.succeeded == result.scheduled
    assert result.errors == {}
    assert elapsed >= 0.59, "an open loop never runs ahead of its schedule"
    assert 200 / 4 < result.achieved_rate <= 200 * 1.01
    assert 1 <= result.p50_ms <= result.p90_ms <= result.p99_ms <= result.p999_ms


async def test_latency_counts_from_the_scheduled_start_so_queueing_shows_in_the_tail() -> None:
    # The callable serves one call at a time in 10 ms: 100 calls/s against 200 offered.
    # Call k is due at 5k ms but cannot finish before 10(k+1) ms, so it waits 5k+10 ms;
    # a closed loop would report about 10 ms for every call.
    lock = asyncio.Lock()

    async def call() -> None:
        async with lock:
            await asyncio.sleep(0.010)

    result = await generate(call, Load(rate=200, duration=0.5, warmup=0, max_outstanding=1000))

    assert result.succeeded == 100
    assert result.p50_ms >= 5 * 50 + 10 - 5
    assert result.p99_ms >= 5 * 98 + 10 - 5
    assert result.achieved_rate <= 100 * 1.01


async def test_counts_failed_measured_calls_by_status_code_name() -> None:
    counter = itertools.count()

    async def call() -> None:
        code = {0: grpc.StatusCode.UNAVAILABLE, 1: grpc.StatusCode.NOT_FOUND}.get(next(counter) % 4)
        if code is not None:
            raise aio.AioRpcError(
                code, aio.Metadata(), aio.Metadata(), details="refused", debug_error_string=None
            )

    result = await generate(call, Load(rate=400, duration=0.2, warmup=0.05, max_outstanding=100))

    assert next(counter) == 100, "20 warm-up calls and 80 measured ones ran"
    assert result.scheduled == 80
    assert result.errors == {"NOT_FOUND": 20, "UNAVAILABLE": 20}
    assert result.succeeded == 40


async def test_calls_beyond_max_outstanding_are_errors_not_a_hidden_queue() -> None:
    in_flight = peak = 0

    async def call() -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.3)
        in_flight -= 1

    result = await generate(call, Load(rate=100, duration=0.2, warmup=0, max_outstanding=5))

    assert peak == 5
    assert result.succeeded == 5
    assert result.errors == {CLIENT_OVERLOADED: 15}
    assert result.p50_ms >= 300


async def test_a_call_slower_than_the_timeout_is_cancelled_and_counted() -> None:
    cancelled = 0

    async def call() -> None:
        nonlocal cancelled
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled += 1
            raise

    result = await generate(
        call, Load(rate=100, duration=0.1, warmup=0, max_outstanding=100, timeout=0.05)
    )

    assert result.errors == {CLIENT_TIMEOUT: 10}
    assert cancelled == 10
    assert result.succeeded == 0
    assert result.p99_ms == 0
