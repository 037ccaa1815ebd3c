"""The generic cache (services/runtime/cache.py) against real Redis: hits, misses and
missing ids; one load for concurrent misses, a cancelled caller failing nobody; XFetch's
early refresh decided by an injected random source and clock; batch reads with one load of
the misses; Redis stopped or paused mid-test (reads still answer, from the loader); bad
input refused."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack

import pytest
from redis.asyncio import Redis

from services.runtime.cache import Cache, cache_key
from services.runtime.cache_settings import CacheSettings
from services.runtime.redis_client import RedisSettings, open_redis
from tests.brokers import redis_server

SETTINGS = CacheSettings(ttl_seconds=3600, negative_ttl_seconds=30, timeout_seconds=0.2)


class Text:
    def encode(self, value: str) -> bytes:
        return value.encode()

    def decode(self, data: bytes) -> str:
        return data.decode()


class Rows:
    """A loader over a dict that counts its calls (what stands for PostgreSQL here)."""

    def __init__(self, rows: dict[str, str]) -> None:
        self.rows = rows
        self.calls: list[list[str]] = []

    async def one(self, item_id: str) -> str | None:
        self.calls.append([item_id])
        return self.rows.get(item_id)

    async def many(self, ids: Sequence[str]) -> Mapping[str, str]:
        self.calls.append(list(ids))
        return {i: self.rows[i] for i in ids if i in self.rows}


async def _until(condition: Callable[[], bool]) -> None:
    """Lets the other tasks run until `condition` holds (a bounded number of turns)."""
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    async with open_redis(redis_url, RedisSettings()) as client:
        yield client


@pytest.fixture
def tenant() -> uuid.UUID:
    return uuid.uuid4()


def cache(redis: Redis, **options: object) -> Cache[str]:
    return Cache("things", redis, Text(), SETTINGS, **options)  # type: ignore[arg-type]


async def test_a_miss_loads_and_stores_and_the_next_read_is_a_hit(
    redis: Redis, tenant: uuid.UUID
) -> None:
    rows, things = Rows({"a": "apple"}), cache(redis)
    assert await things.get(tenant, "a", lambda: rows.one("a")) == "apple"
    assert await things.get(tenant, "a", lambda: rows.one("a")) == "apple"
    assert rows.calls == [["a"]]
    assert (things.stats.misses, things.stats.hits, things.stats.loads) == (1, 1, 1)
    key = things.key(tenant, "a")
    assert key == f"nova:cache:things:v1:{{{tenant}:a}}"
    assert 3500_000 < await redis.pttl(key) <= 3600_000
    stored = await redis.get(key)
    assert isinstance(stored, bytes)
    assert len(stored) == 13 + len("apple")  # header + the codec's bytes


async def test_a_missing_id_is_cached_as_missing_for_the_short_ttl(
    redis: Redis, tenant: uuid.UUID
) -> None:
    rows, things = Rows({}), cache(redis)
    for _ in range(3):
        assert await things.get(tenant, "ghost", lambda: rows.one("ghost")) is None
    assert rows.calls == [["ghost"]]
    assert things.stats.negative_hits == 2
    assert 0 < await redis.pttl(things.key(tenant, "ghost")) <= 30_000


async def test_concurrent_misses_share_one_load_and_a_cancelled_caller_fails_nobody(
    redis: Redis, tenant: uuid.UUID
) -> None:
    release = asyncio.Event()
    loads = 0

    async def slow() -> str:
        nonlocal loads
        loads += 1
        await release.wait()
        return "value"

    things = cache(redis)
    readers = [asyncio.create_task(things.get(tenant, "hot", slow)) for _ in range(200)]
    await _until(lambda: things.stats.misses == 200)  # every reader waits on the load
    assert loads == 1
    readers[0].cancel()  # the first caller, whose call started the load, gives up
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*readers[1:])
    assert results == ["value"] * 199
    with pytest.raises(asyncio.CancelledError):
        await readers[0]
    assert loads == 1
    # The load finished and stored although its first caller was gone.
    assert await things.get(tenant, "hot", slow) == "value"
    assert loads == 1


async def test_a_failed_load_fails_its_waiters_and_is_not_cached(
    redis: Redis, tenant: uuid.UUID
) -> None:
    attempts = 0
    release = asyncio.Event()

    async def failing() -> str:
        nonlocal attempts
        attempts += 1
        await release.wait()
        raise RuntimeError("database down")

    things = cache(redis)
    readers = [asyncio.create_task(things.get(tenant, "x", failing)) for _ in range(10)]
    await _until(lambda: things.stats.misses == 10)
    release.set()
    results = await asyncio.gather(*readers, return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)
    assert attempts == 1
    assert await redis.exists(things.key(tenant, "x")) == 0
    with pytest.raises(RuntimeError):
        await things.get(tenant, "x", failing)
    assert attempts == 2


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_xfetch_refreshes_early_only_when_the_draw_and_nearness_to_expiry_say_so(
    redis: Redis, tenant: uuid.UUID
) -> None:
    clock = Clock()
    draws: list[float] = []
    loads = 0

    async def load() -> str:
        nonlocal loads
        loads += 1
        clock.now += 2.0  # the load "takes" 2 s: delta
        return f"v{loads}"

    things = cache(redis, random_source=lambda: draws.pop(0), clock=clock)
    assert await things.get(tenant, "k", load) == "v1"  # stored at t0 + 2, expires + 3600
    expiry = clock.now + 3600

    # Far from expiry, even the luckiest draw (u ~ 0: -ln u = 690) waits: 2 * 690 < 3600.
    draws.append(1e-300)
    assert await things.get(tenant, "k", load) == "v1"
    await things.settled()
    assert (loads, things.stats.early_refreshes) == (1, 0)

    # 10 s before expiry: a draw of 1 (-ln u = 0) does not refresh, one of 0.001
    # (-ln u = 6.9: 13.8 s) does, in the background, while the reader gets the value.
    clock.now = expiry - 10
    draws.append(1.0)
    assert await things.get(tenant, "k", load) == "v1"
    await things.settled()
    assert loads == 1
    draws.append(0.001)
    assert await things.get(tenant, "k", load) == "v1"
    await things.settled()
    assert (loads, things.stats.early_refreshes) == (2, 1)
    draws.append(1.0)
    assert await things.get(tenant, "k", load) == "v2"  # the refreshed value, new expiry


async def test_a_batch_read_is_one_mget_and_one_load_of_the_misses(
    redis: Redis, tenant: uuid.UUID
) -> None:
    rows = Rows({"a": "apple", "b": "banana", "c": "cherry", "d": "date"})
    things = cache(redis)
    assert await things.get(tenant, "a", lambda: rows.one("a")) == "apple"
    rows.calls.clear()

    found = await things.get_many(tenant, ["d", "a", "ghost", "b", "a"], rows.many)
    assert list(found.items()) == [("d", "date"), ("a", "apple"), ("b", "banana")]
    assert rows.calls == [["d", "ghost", "b"]]

    again = await things.get_many(tenant, ["ghost", "b", "d", "a"], rows.many)
    assert again == {"b": "banana", "d": "date", "a": "apple"}
    assert rows.calls == [["d", "ghost", "b"]]  # no second load: "ghost" is cached missing
    assert things.stats.negative_hits == 1
    assert await things.get_many(tenant, [], rows.many) == {}


async def test_forget_deletes_the_entry_so_the_next_read_loads_again(
    redis: Redis, tenant: uuid.UUID
) -> None:
    rows, things = Rows({"a": "apple"}), cache(redis)
    await things.get(tenant, "a", lambda: rows.one("a"))
    rows.rows["a"] = "avocado"
    await things.forget(tenant, "a")
    assert await things.get(tenant, "a", lambda: rows.one("a")) == "avocado"
    assert len(rows.calls) == 2


async def test_entries_of_another_tenant_are_apart(redis: Redis, tenant: uuid.UUID) -> None:
    things = cache(redis)
    await things.get(tenant, "a", lambda: Rows({"a": "mine"}).one("a"))
    assert await things.get(uuid.uuid4(), "a", lambda: Rows({"a": "theirs"}).one("a")) == "theirs"


async def test_reads_answer_from_the_loader_when_redis_stops_mid_test() -> None:
    tenant, rows = uuid.uuid4(), Rows({"a": "apple", "b": "banana"})
    async with AsyncExitStack() as outer:
        server = AsyncExitStack()
        url = await server.enter_async_context(redis_server())
        client = await outer.enter_async_context(open_redis(url, RedisSettings()))
        things = cache(client)
        assert await things.get(tenant, "a", lambda: rows.one("a")) == "apple"
        assert await things.get(tenant, "a", lambda: rows.one("a")) == "apple"
        assert len(rows.calls) == 1

        await server.aclose()  # redis-server stopped
        assert await things.get(tenant, "a", lambda: rows.one("a")) == "apple"
        assert await things.get_many(tenant, ["a", "b"], rows.many) == {
            "a": "apple",
            "b": "banana",
        }
        await things.forget(tenant, "a")
        assert len(rows.calls) == 3
        assert things.stats.bypassed == 3


async def test_a_paused_redis_is_bypassed_after_the_timeout_not_waited_for() -> None:
    tenant, rows = uuid.uuid4(), Rows({"a": "apple"})
    async with redis_server() as url, open_redis(url, RedisSettings()) as client:
        things = cache(client)
        async with open_redis(url, RedisSettings()) as admin:
            await admin.client_pause(5000)
            started = time.monotonic()
            assert await things.get(tenant, "a", lambda: rows.one("a")) == "apple"
            elapsed = time.monotonic() - started
        assert elapsed < 2.5  # the pause was 5 s; the read went around it
        assert things.stats.bypassed >= 1


@pytest.mark.parametrize(
    ("name", "tenant_id", "item_id", "message"),
    [
        ("Bad Name", uuid.uuid4(), "a", "must be a lowercase identifier"),
        ("things", "not-a-uuid", "a", "tenant_id must be a UUID"),
        ("things", uuid.uuid4(), "", "1 to 200 characters"),
        ("things", uuid.uuid4(), "x" * 201, "1 to 200 characters"),
        ("things", uuid.uuid4(), "a}b", "may not contain braces"),
    ],
)
def test_keys_refuse_what_would_collide_or_break_the_hash_tag(
    name: str, tenant_id: object, item_id: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        cache_key(name, tenant_id, item_id)  # type: ignore[arg-type]


async def test_bad_settings_a_bad_random_source_and_oversized_batches_are_refused(
    redis: Redis, tenant: uuid.UUID
) -> None:
    with pytest.raises(ValueError, match="TTLs must be positive"):
        Cache("things", redis, Text(), CacheSettings(ttl_seconds=0))
    with pytest.raises(ValueError, match="timeout must be positive"):
        Cache("things", redis, Text(), CacheSettings(timeout_seconds=0))
    with pytest.raises(ValueError, match="at most 1000 ids"):
        await cache(redis).get_many(tenant, [str(i) for i in range(1001)], Rows({}).many)
    broken = cache(redis, random_source=lambda: 0.0)
    await broken.get(tenant, "a", lambda: Rows({"a": "apple"}).one("a"))
    with pytest.raises(ValueError, match=r"random source must give a number in \(0, 1\]"):
        await broken.get(tenant, "a", lambda: Rows({"a": "apple"}).one("a"))


async def test_a_load_that_began_before_a_forget_does_not_store_the_old_value(
    redis: Redis, tenant: uuid.UUID
) -> None:
    """The reader read the entry (missing) and began loading the old row; the writer then
    committed and forgot the entry; the reader's store must not put the old row back."""
    things = cache(redis)
    loading, committed = asyncio.Event(), asyncio.Event()
    rows = {"a": "old"}

    async def slow_load() -> str | None:
        value = rows.get("a")
        loading.set()
        await committed.wait()
        return value

    reader = asyncio.create_task(things.get(tenant, "a", slow_load))
    await loading.wait()
    rows["a"] = "new"  # the writer's commit
    await things.forget(tenant, "a")
    committed.set()
    assert await reader == "old"  # what it read is still its answer

    assert await redis.exists(things.key(tenant, "a")) == 0, "the old value was not stored"
    assert await things.get(tenant, "a", lambda: Rows(rows).one("a")) == "new"
    assert await things.get(tenant, "a", lambda: Rows({}).one("a")) == "new", "stored now"


async def test_a_batch_load_that_began_before_a_forget_stores_only_the_untouched_ids(
    redis: Redis, tenant: uuid.UUID
) -> None:
    things = cache(redis)
    loading, committed = asyncio.Event(), asyncio.Event()

    async def slow_many(ids: Sequence[str]) -> Mapping[str, str]:
        loading.set()
        await committed.wait()
        return {i: f"old {i}" for i in ids}

    reader = asyncio.create_task(things.get_many(tenant, ["a", "b"], slow_many))
    await loading.wait()
    await things.forget(tenant, "a")
    committed.set()
    await reader

    assert await redis.exists(things.key(tenant, "a")) == 0
    assert await redis.exists(things.key(tenant, "b")) == 1
