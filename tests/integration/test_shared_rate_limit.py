"""The shared quota limiter (services/runtime/shared_rate_limit.py) against real Redis: a
burst then one call per interval; two limiters on two clients (two processes) drawing on
one budget; keys apart; refusals that cost nothing; a quota changed between calls; keys
that expire once their bucket is empty; an unreachable Redis limiting locally and logging
once; Redis coming back, tried at most once a second; bad quotas refused.

Every test has a prefix of its own, so tests (and runs) sharing a Redis never meet, and
quotas are small and fast, so what they leave expires within a second."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from services.runtime.redis_client import RedisSettings, open_redis
from services.runtime.shared_rate_limit import Quota, SharedRateLimiter
from tests.brokers import redis_server

# Calls of one test run within milliseconds of each other; waits are compared with this
# much slack for the time that passes between them on a loaded machine.
SLACK = 0.03


class Clock:
    """The local limiter's clock and the pace of Redis retries, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    opened = Redis.from_url(redis_url)
    yield opened
    await opened.aclose()


@pytest.fixture
def prefix() -> str:
    return f"test:quota:{uuid.uuid4().hex}:"


@pytest.fixture
def quota_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="nova.quota")
    return caplog


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "nova.quota" and r.levelno == level]


async def test_a_burst_is_allowed_at_once_then_the_next_call_waits_one_interval(
    client: Redis, prefix: str
) -> None:
    limiter, quota = SharedRateLimiter(client, prefix=prefix), Quota(per_second=10, burst=3)
    assert [await limiter.try_acquire("tenant", quota) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await limiter.try_acquire("tenant", quota)
    assert 0.1 - SLACK < wait <= 0.1
    assert not limiter.local
    await asyncio.sleep(wait)
    assert await limiter.try_acquire("tenant", quota) == 0.0
    assert await limiter.try_acquire("tenant", quota) > 0


async def test_two_processes_draw_on_one_budget(redis_url: str, prefix: str) -> None:
    quota = Quota(per_second=5, burst=4)
    async with AsyncExitStack() as stack:
        first, second = Redis.from_url(redis_url), Redis.from_url(redis_url)
        stack.push_async_callback(first.aclose)
        stack.push_async_callback(second.aclose)
        a, b = SharedRateLimiter(first, prefix=prefix), SharedRateLimiter(second, prefix=prefix)
        allowed = [await limiter.try_acquire("tenant", quota) for limiter in (a, b, a, b)]
        assert allowed == [0.0, 0.0, 0.0, 0.0]
        assert await a.try_acquire("tenant", quota) > 0.2 - SLACK
        assert await b.try_acquire("tenant", quota) > 0.2 - SLACK
        assert not a.local
        assert not b.local


async def test_each_key_has_a_budget_of_its_own(client: Redis, prefix: str) -> None:
    limiter, quota = SharedRateLimiter(client, prefix=prefix), Quota(per_second=2, burst=1)
    assert await limiter.try_acquire("tenant-a", quota) == 0.0
    assert await limiter.try_acquire("tenant-a", quota) > 0
    assert await limiter.try_acquire("tenant-b", quota) == 0.0
    other = SharedRateLimiter(client, prefix=f"test:quota:{uuid.uuid4().hex}:")
    assert await other.try_acquire("tenant-a", quota) == 0.0, "another prefix, other keys"


async def test_refused_calls_do_not_push_the_wait_further(client: Redis, prefix: str) -> None:
    limiter, quota = SharedRateLimiter(client, prefix=prefix), Quota(per_second=5, burst=1)
    assert await limiter.try_acquire("tenant", quota) == 0.0
    waits = [await limiter.try_acquire("tenant", quota) for _ in range(30)]
    assert all(0 < wait <= 0.2 for wait in waits)
    assert waits == sorted(waits, reverse=True), "each refusal waits less, never more"
    await asyncio.sleep(waits[0])  # the first refusal's hint: the others cost nothing
    assert await limiter.try_acquire("tenant", quota) == 0.0


async def test_a_quota_changed_between_calls_counts_from_the_next_call(
    client: Redis, prefix: str
) -> None:
    limiter = SharedRateLimiter(client, prefix=prefix)
    small, large = Quota(per_second=10, burst=2), Quota(per_second=10, burst=5)
    assert [await limiter.try_acquire("tenant", small) for _ in range(2)] == [0.0, 0.0]
    assert await limiter.try_acquire("tenant", small) > 0
    assert [await limiter.try_acquire("tenant", large) for _ in range(3)] == [0.0] * 3
    assert await limiter.try_acquire("tenant", large) > 0
    # Five calls left the bucket 0.5 s deep; a burst of 1 now waits until it is empty.
    wait = await limiter.try_acquire("tenant", Quota(per_second=10, burst=1))
    assert 0.5 - SLACK < wait <= 0.5


async def test_keys_expire_once_their_bucket_is_empty(client: Redis, prefix: str) -> None:
    limiter = SharedRateLimiter(client, prefix=prefix)
    assert await limiter.try_acquire("slow", Quota(per_second=5, burst=3)) == 0.0
    assert await limiter.try_acquire("slow", Quota(per_second=5, burst=3)) == 0.0
    assert 400 - SLACK * 1000 < await client.pttl(prefix + "slow") <= 400
    assert await limiter.try_acquire("fast", Quota(per_second=20, burst=1)) == 0.0
    assert 0 < await client.pttl(prefix + "fast") <= 50
    await asyncio.sleep(0.1)
    assert await client.exists(prefix + "fast") == 0
    assert await client.exists(prefix + "slow") == 1


async def test_an_unreachable_redis_limits_locally_and_says_so_once(
    prefix: str, quota_log: pytest.LogCaptureFixture
) -> None:
    clock, quota = Clock(), Quota(per_second=10, burst=2)
    down = Redis.from_url(
        "redis://127.0.0.1:1/0", socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    try:
        limiter = SharedRateLimiter(down, prefix=prefix, clock=clock)
        assert await limiter.try_acquire("tenant", quota) == 0.0
        assert limiter.local
        assert await limiter.try_acquire("tenant", quota) == 0.0
        assert await limiter.try_acquire("tenant", quota) == pytest.approx(0.1)
        assert await limiter.try_acquire("other", quota) == 0.0
        clock.now += 2.5  # past the retry pace, twice: Redis is tried (and fails) again
        assert await limiter.try_acquire("tenant", quota) == 0.0
        clock.now += 1.0
        assert await limiter.try_acquire("tenant", quota) == 0.0
        assert limiter.local
    finally:
        await down.aclose()
    (warning,) = _records(quota_log, logging.WARNING)
    assert "redis unreachable" in warning.getMessage()
    assert "ConnectionError" in warning.getMessage()
    assert _records(quota_log, logging.INFO) == []


async def test_without_redis_every_call_counts_locally(prefix: str) -> None:
    clock, quota = Clock(), Quota(per_second=0.5, burst=1)
    limiter = SharedRateLimiter(None, prefix=prefix, clock=clock, max_local_keys=2)
    assert limiter.local
    assert await limiter.try_acquire("tenant", quota) == 0.0
    assert await limiter.try_acquire("tenant", quota) == pytest.approx(2.0)
    clock.now += 2.0
    assert await limiter.try_acquire("tenant", quota) == 0.0


async def test_redis_back_is_tried_once_a_second_and_then_shared_again(
    prefix: str, quota_log: pytest.LogCaptureFixture
) -> None:
    clock, quota, port = Clock(), Quota(per_second=10, burst=5), _port_below_ephemeral_range()
    async with AsyncExitStack() as stack:
        first = AsyncExitStack()
        url = await first.enter_async_context(redis_server(port=port))
        client = await stack.enter_async_context(
            open_redis(url, RedisSettings(timeout_seconds=0.5))
        )
        limiter = SharedRateLimiter(client, prefix=prefix, clock=clock)
        assert await limiter.try_acquire("tenant", quota) == 0.0
        assert await client.exists(prefix + "tenant") == 1

        await first.aclose()  # Redis stops
        assert await limiter.try_acquire("tenant", quota) == 0.0
        assert limiter.local
        assert len(_records(quota_log, logging.WARNING)) == 1

        await stack.enter_async_context(redis_server(port=port))  # empty, on the same port
        clock.now += 0.9
        assert await limiter.try_acquire("tenant", quota) == 0.0
        assert limiter.local, "within a second of the failure Redis is not tried"
        assert await _exists(client, prefix + "tenant") == 0

        clock.now += 0.1
        assert await limiter.try_acquire("tenant", quota) == 0.0
        assert not limiter.local
        assert await client.exists(prefix + "tenant") == 1
    assert len(_records(quota_log, logging.WARNING)) == 1
    (back,) = _records(quota_log, logging.INFO)
    assert "answers again" in back.getMessage()


@pytest.mark.parametrize(
    ("per_second", "burst", "message"),
    [
        (0, 1, "per_second must be a finite number above 0"),
        (-1.5, 1, "per_second must be a finite number above 0"),
        (float("inf"), 1, "per_second must be a finite number above 0"),
        (float("nan"), 1, "per_second must be a finite number above 0"),
        (1, 0, "burst must be a whole number >= 1"),
        (1, -3, "burst must be a whole number >= 1"),
        (1, 1.5, "burst must be a whole number >= 1"),
    ],
)
def test_a_quota_needs_a_positive_rate_and_a_burst_of_at_least_one(
    per_second: float, burst: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Quota(per_second=per_second, burst=burst)


def test_a_quota_reads_as_its_rate() -> None:
    assert str(Quota(per_second=0.5, burst=3)) == "0.5/s, bursts of 3"


async def _exists(client: Redis, key: str) -> int:
    """EXISTS, once more if the first try meets the pooled connection from before the
    restart."""
    try:
        return int(await client.exists(key))
    except RedisError:
        return int(await client.exists(key))


def _port_below_ephemeral_range() -> int:
    """A free port the kernel never hands out as a connection's own: while Redis is down,
    a reconnect to an ephemeral port can connect to itself (TCP simultaneous open) and
    read its own commands back as replies (as in test_feed_outage.py)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(max(1024, low - 8000), low), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")
