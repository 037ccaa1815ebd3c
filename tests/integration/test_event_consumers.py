"""Consumers against real PostgreSQL, Redis and the PostgreSQL log: each event has one
effect however often it is delivered, failed attempts leave no effect, a poison event is
dead-lettered while the events after it go on, replay processes it once for the group that
failed and for no other, and a Redis outage aborts the batch instead of dead-lettering it.

Each test consumes with groups of its own, rewound to the moment before it publishes, so
the events other tests put on the shared log are not delivered to it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from nova.events.v1 import events_pb2
from services.registry import REGISTRY
from services.runtime.db import Database
from services.runtime.errors import InvalidArgument, NotFound
from services.runtime.events.consumer import Consumer, ConsumerSettings
from services.runtime.events.dead_letters import list_dead_letters, request_replay
from services.runtime.events.effects import PostgresHandler, RedisHandler
from services.runtime.events.envelope import new_event
from services.runtime.events.model import Event
from services.runtime.events.pglog import PostgresLog
from services.runtime.spec import Dependencies
from tests.brokers import free_port
from tests.integration.test_client_fakes import Metrics

FAST = ConsumerSettings(batch_size=10, fetch_timeout_seconds=0.1, retry_backoff_seconds=0.01)


@pytest.fixture(scope="module")
async def effects(deps: Dependencies) -> AsyncIterator[Database]:
    """A table the handlers write one row to per effect, with no unique key: an event
    applied twice shows as two rows."""
    async with deps.db.connection() as conn:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS consumer_test")
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS consumer_test.effects (
                   group_name text NOT NULL, event_id uuid NOT NULL)"""
        )
    yield deps.db
    async with deps.db.connection() as conn:
        await conn.execute("DROP SCHEMA consumer_test CASCADE")


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def log(deps: Dependencies) -> PostgresLog:
    return PostgresLog(deps.db)


def _group(name: str) -> str:
    return f"test-{name}-{uuid.uuid4().hex[:8]}"


def _post_created(tenant: uuid.UUID) -> Event:
    post = uuid.uuid4()
    return new_event(
        tenant_id=tenant,
        aggregate_type="post",
        aggregate_id=post,
        payload=events_pb2.PostCreated(post_id=str(post), author_id=str(uuid.uuid4())),
    )


def _user_created(tenant: uuid.UUID) -> Event:
    user = uuid.uuid4()
    return new_event(
        tenant_id=tenant,
        aggregate_type="user",
        aggregate_id=user,
        payload=events_pb2.UserCreated(user_id=str(user), handle="grace"),
    )


def _recording(group: str) -> PostgresHandler:
    async def record(
        conn: asyncpg.Connection, event: Event, envelope: events_pb2.EventEnvelope
    ) -> None:
        await conn.execute(
            "INSERT INTO consumer_test.effects VALUES ($1, $2)", group, event.event_id
        )

    return record


async def _effects(db: Database, group: str) -> dict[uuid.UUID, int]:
    """Effects per event id of `group`."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            """SELECT event_id, count(*) AS n FROM consumer_test.effects
                WHERE group_name = $1 GROUP BY event_id""",
            group,
        )
    return {row["event_id"]: row["n"] for row in rows}


async def _now(db: Database) -> datetime:
    async with db.connection() as conn:
        now: datetime = await conn.fetchval("SELECT clock_timestamp()")
    return now


async def _publish(log: PostgresLog, *batches: Sequence[Event]) -> None:
    async with log.publisher() as publisher:
        for batch in batches:
            await publisher.publish(batch)


async def run_until(consumer: Consumer, done: Callable[[], bool]) -> None:
    """Runs the consumer until `done()` holds (20 s at most), then stops it gracefully (the
    batch in progress is finished and committed) and waits for it to end."""
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        for _ in range(1000):
            if done():
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"{consumer.group} did not get there in 20 s: {consumer.stats}")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def _seen(consumer: Consumer) -> int:
    stats = consumer.stats
    return stats.processed + stats.duplicates + stats.skipped + stats.dead_lettered + stats.parked


async def test_every_event_has_one_effect_and_positions_are_committed(
    effects: Database, log: PostgresLog
) -> None:
    group, metrics, tenant = _group("once"), Metrics(), uuid.uuid4()
    posts = [_post_created(tenant) for _ in range(5)]
    await log.rewind(group, REGISTRY.topics, await _now(effects))
    await _publish(log, [*posts[:2], _user_created(tenant), *posts[2:]])

    first = Consumer(group, log, effects, REGISTRY.topics, settings=FAST, meter=metrics.meter)
    first.on("PostCreated", _recording(group))
    await run_until(first, lambda: _seen(first) == 6)

    assert await _effects(effects, group) == {event.event_id: 1 for event in posts}
    assert first.stats.skipped == 1, "UserCreated has no handler"
    assert metrics.points("nova.events.processed") == [
        ({"group": group, "event_type": "PostCreated"}, 5)
    ]
    assert metrics.total("nova.events.duplicates") == 0

    # A restarted consumer continues after the committed batch, skipped event included.
    later = _post_created(tenant)
    await _publish(log, [later])
    second = Consumer(group, log, effects, REGISTRY.topics, settings=FAST)
    second.on("PostCreated", _recording(group))
    await run_until(second, lambda: _seen(second) >= 1)
    assert (second.stats.processed, second.stats.duplicates, second.stats.skipped) == (1, 0, 0)
    assert (await _effects(effects, group))[later.event_id] == 1


async def test_an_event_delivered_again_has_no_second_effect(
    effects: Database, log: PostgresLog
) -> None:
    group, metrics, tenant = _group("dup"), Metrics(), uuid.uuid4()
    one, two = _post_created(tenant), _post_created(tenant)
    since = await _now(effects)
    await log.rewind(group, REGISTRY.topics, since)
    await _publish(log, [one, two], [one])  # the relay published `one` twice

    consumer = Consumer(group, log, effects, REGISTRY.topics, settings=FAST, meter=metrics.meter)
    consumer.on("PostCreated", _recording(group))
    await run_until(consumer, lambda: _seen(consumer) == 3)
    assert await _effects(effects, group) == {one.event_id: 1, two.event_id: 1}
    assert metrics.points("nova.events.duplicates") == [({"group": group}, 1)]

    # Rewound, the group reads all three deliveries again: no effect, three duplicates.
    await log.rewind(group, REGISTRY.topics, since)
    again = Consumer(group, log, effects, REGISTRY.topics, settings=FAST, meter=metrics.meter)
    again.on("PostCreated", _recording(group))
    await run_until(again, lambda: _seen(again) == 3)
    assert again.stats.processed == 0
    assert await _effects(effects, group) == {one.event_id: 1, two.event_id: 1}
    assert metrics.total("nova.events.duplicates") == 4
    assert metrics.total("nova.events.processed") == 2


async def test_a_handler_that_fails_twice_then_succeeds_has_one_effect(
    effects: Database, log: PostgresLog
) -> None:
    group, metrics, tenant = _group("flaky"), Metrics(), uuid.uuid4()
    event = _post_created(tenant)
    calls: list[uuid.UUID] = []

    async def flaky(
        conn: asyncpg.Connection, event: Event, envelope: events_pb2.EventEnvelope
    ) -> None:
        # The effect is written before the failure: the rollback must take it back.
        await _recording(group)(conn, event, envelope)
        calls.append(event.event_id)
        if len(calls) <= 2:
            raise RuntimeError("the downstream hiccuped")

    await log.rewind(group, REGISTRY.topics, await _now(effects))
    await _publish(log, [event])
    consumer = Consumer(group, log, effects, REGISTRY.topics, settings=FAST, meter=metrics.meter)
    consumer.on("PostCreated", flaky)
    await run_until(consumer, lambda: _seen(consumer) == 1)

    assert len(calls) == 3
    assert consumer.stats.retries == 2
    assert await _effects(effects, group) == {event.event_id: 1}
    assert metrics.total("nova.events.processed") == 1
    assert metrics.total("nova.events.dead_lettered") == 0
    assert await list_dead_letters(effects, group) == []


async def test_a_poison_event_is_dead_lettered_and_replayed_once_fixed(
    effects: Database, log: PostgresLog
) -> None:
    failing, healthy, tenant = _group("poison"), _group("healthy"), uuid.uuid4()
    first, poison, last = (_post_created(tenant) for _ in range(3))
    broken = {poison.event_id}

    async def picky(
        conn: asyncpg.Connection, event: Event, envelope: events_pb2.EventEnvelope
    ) -> None:
        if event.event_id in broken:
            raise ValueError(f"cannot handle {event.event_id}")
        await _recording(failing)(conn, event, envelope)

    since = await _now(effects)
    for group in (failing, healthy):
        await log.rewind(group, REGISTRY.topics, since)
    # The poison event comes twice before anyone replays it: still one dead letter.
    await _publish(log, [first, poison, last], [poison])

    metrics = Metrics()
    settings = ConsumerSettings(
        batch_size=10, fetch_timeout_seconds=0.1, max_attempts=3, retry_backoff_seconds=0.01
    )
    consumer = Consumer(
        failing, log, effects, REGISTRY.topics, settings=settings, meter=metrics.meter
    )
    consumer.on("PostCreated", picky)
    other = Consumer(healthy, log, effects, REGISTRY.topics, settings=settings)
    other.on("PostCreated", _recording(healthy))
    await asyncio.gather(
        run_until(consumer, lambda: _seen(consumer) == 4),
        run_until(other, lambda: _seen(other) == 4),
    )

    assert await _effects(effects, failing) == {first.event_id: 1, last.event_id: 1}
    assert await _effects(effects, healthy) == {e.event_id: 1 for e in (first, poison, last)}
    assert consumer.stats.retries == 2, "two retries, then the dead letter"
    # Delivered again while its letter is open, the event waits behind it (its aggregate
    # is held back) instead of failing a second time.
    assert (consumer.stats.dead_lettered, consumer.stats.parked) == (1, 1)
    assert metrics.points("nova.events.dead_lettered") == [
        ({"group": failing, "event_type": "PostCreated"}, 1)
    ]
    assert metrics.points("nova.events.parked") == [({"group": failing}, 1)]
    [letter] = await list_dead_letters(effects, failing)
    assert (letter.event_id, letter.event_type, letter.topic, letter.aggregate_id) == (
        poison.event_id,
        "PostCreated",
        "nova.post.v1",
        poison.aggregate_id,
    )
    assert letter.error == f"ValueError: cannot handle {poison.event_id}"
    assert (letter.attempts, letter.parked) == (3, 1)
    assert letter.replayed_at is None
    assert letter.event == poison

    broken.clear()  # the handler is fixed
    with pytest.raises(NotFound, match=r"no dead letter with id -1;"):
        await request_replay(effects, [letter.id, -1])
    log_end = await _log_end(effects)
    [asked] = await request_replay(effects, [letter.id])
    assert asked.id == letter.id

    metrics_after = Metrics()
    fixed = Consumer(
        failing, log, effects, REGISTRY.topics, settings=settings, meter=metrics_after.meter
    )
    fixed.on("PostCreated", picky)
    await run_until(fixed, lambda: fixed.stats.released == 1)
    assert fixed.stats.replayed == 1
    assert await _effects(effects, failing) == {e.event_id: 1 for e in (first, poison, last)}
    assert metrics_after.points("nova.events.processed") == [
        ({"group": failing, "event_type": "PostCreated"}, 1)
    ]
    # The parked copy of the replayed event is a duplicate; no other group saw anything:
    # a replay publishes nothing.
    assert metrics_after.points("nova.events.duplicates") == [({"group": failing}, 1)]
    assert await _log_end(effects) == log_end
    assert await _effects(effects, healthy) == {e.event_id: 1 for e in (first, poison, last)}
    assert await list_dead_letters(effects, failing) == []
    [done] = await list_dead_letters(effects, failing, include_replayed=True)
    assert (done.id, done.parked) == (letter.id, 0)
    assert done.replayed_at is not None
    with pytest.raises(InvalidArgument, match="is closed and cannot be replayed"):
        await request_replay(effects, [letter.id])
    assert await request_replay(effects, group=failing) == []


async def _log_end(db: Database) -> int:
    async with db.connection() as conn:
        end: int = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM nova_events.log")
    return end


def _counting(group: str, fail_first: int = 0) -> RedisHandler:
    """A Redis handler: counts events and remembers their ids; its first `fail_first`
    calls queue their commands and then raise."""
    calls = 0

    async def count(pipe: Pipeline, event: Event, envelope: events_pb2.EventEnvelope) -> None:
        nonlocal calls
        calls += 1
        pipe.incr(f"test:{group}:count")
        pipe.sadd(f"test:{group}:seen", str(event.event_id))
        if calls <= fail_first:
            raise RuntimeError("failed after queueing")

    return count


async def _count(client: Redis, group: str) -> tuple[int, int]:
    count = await client.get(f"test:{group}:count")
    return int(count or 0), await client.scard(f"test:{group}:seen")


async def _forget(client: Redis, group: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"*{group}*")]
    if keys:
        await client.delete(*keys)


async def test_redis_effects_drop_duplicates_and_failed_attempts(
    effects: Database, log: PostgresLog, redis_client: Redis
) -> None:
    group, metrics, tenant = _group("redis"), Metrics(), uuid.uuid4()
    one, two = _post_created(tenant), _post_created(tenant)
    since = await _now(effects)
    await log.rewind(group, REGISTRY.topics, since)
    await _publish(log, [one, two], [one])
    settings = ConsumerSettings(
        batch_size=10,
        fetch_timeout_seconds=0.1,
        retry_backoff_seconds=0.01,
        redis_marker_ttl_seconds=3600,
    )
    try:
        consumer = Consumer(
            group,
            log,
            effects,
            REGISTRY.topics,
            redis=redis_client,
            settings=settings,
            meter=metrics.meter,
        )
        # The first attempt queues INCR and SADD and then fails: nothing of it may apply.
        consumer.on_redis("PostCreated", _counting(group, fail_first=1))
        await run_until(consumer, lambda: _seen(consumer) == 3)
        assert await _count(redis_client, group) == (2, 2)
        assert consumer.stats.retries == 1
        assert metrics.points("nova.events.duplicates") == [({"group": group}, 1)]
        ttl = await redis_client.ttl(f"nova:processed:{group}:{one.event_id}")
        assert 3500 < ttl <= 3600

        await log.rewind(group, REGISTRY.topics, since)
        again = Consumer(
            group, log, effects, REGISTRY.topics, redis=redis_client, settings=settings
        )
        again.on_redis("PostCreated", _counting(group))
        await run_until(again, lambda: _seen(again) == 3)
        assert (again.stats.processed, again.stats.duplicates) == (0, 3)
        assert await _count(redis_client, group) == (2, 2)
    finally:
        await _forget(redis_client, group)


async def test_a_redis_command_failing_inside_exec_is_dead_lettered_at_once(
    effects: Database, log: PostgresLog, redis_client: Redis
) -> None:
    group, tenant = _group("wrongtype"), uuid.uuid4()
    event = _post_created(tenant)

    async def wrong_type(pipe: Pipeline, event: Event, envelope: events_pb2.EventEnvelope) -> None:
        pipe.sadd(f"test:{group}:set", "x")
        pipe.incr(f"test:{group}:set")  # WRONGTYPE, found only when EXEC runs it

    await log.rewind(group, REGISTRY.topics, await _now(effects))
    await _publish(log, [event])
    try:
        consumer = Consumer(group, log, effects, REGISTRY.topics, redis=redis_client, settings=FAST)
        consumer.on_redis("PostCreated", wrong_type)
        await run_until(consumer, lambda: _seen(consumer) == 1)
        [letter] = await list_dead_letters(effects, group)
        assert letter.attempts == 1, "a retry would only find the marker"
        assert letter.error.startswith("NotRetryable: Redis ran the transaction but 1 command")
        assert "WRONGTYPE" in letter.error
        assert await redis_client.exists(f"nova:processed:{group}:{event.event_id}") == 1
    finally:
        await _forget(redis_client, group)


async def test_an_unreachable_redis_aborts_the_batch_instead_of_dead_lettering(
    effects: Database, log: PostgresLog, redis_client: Redis
) -> None:
    group, tenant = _group("outage"), uuid.uuid4()
    event = _post_created(tenant)
    await log.rewind(group, REGISTRY.topics, await _now(effects))
    await _publish(log, [event])
    down = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        broken = Consumer(group, log, effects, REGISTRY.topics, redis=down, settings=FAST)
        broken.on_redis("PostCreated", _counting(group))
        stop = asyncio.Event()
        task = asyncio.create_task(broken.run(stop))
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert broken.stats.batches == 0
        assert broken.stats.dead_lettered == 0
        assert await list_dead_letters(effects, group) == []

        # Nothing was committed: with Redis back, the event is processed.
        healed = Consumer(group, log, effects, REGISTRY.topics, redis=redis_client, settings=FAST)
        healed.on_redis("PostCreated", _counting(group))
        await run_until(healed, lambda: _seen(healed) == 1)
        assert healed.stats.processed == 1
        assert await _count(redis_client, group) == (1, 1)
    finally:
        await down.aclose()
        await _forget(redis_client, group)
