"""Consumer lag and group status on both transports: exact backlogs, the age of the oldest
uncommitted event, members (active and standby on the PostgreSQL log), the gauges on the
Prometheus endpoint, and the dead letters and parked events a group holds.

Each test publishes to topics of its own (an aggregate type no other test uses) under
groups of its own, so the numbers are exact although the database and broker are shared.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
from aiokafka import AIOKafkaProducer

from nova.events.v1 import events_pb2
from services.runtime.db import Database
from services.runtime.events.envelope import new_event
from services.runtime.events.kafka import KafkaTransport
from services.runtime.events.lag_gauges import LagGauges
from services.runtime.events.model import Delivery, Event, GroupLag, TopicLag
from services.runtime.events.pglog import PostgresLog
from services.runtime.events.status import group_statuses
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.metrics import prometheus_endpoint
from services.runtime.spec import Dependencies
from tests.brokers import single_node_transport
from tests.integration.test_server_metrics import scrape, value


@pytest.fixture(scope="module")
async def kafka(kafka_bootstrap: str) -> AsyncIterator[KafkaTransport]:
    async with single_node_transport(
        kafka_bootstrap, partitions=2, session_timeout_ms=1000, heartbeat_interval_ms=100
    ) as transport:
        yield transport


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def _events(count: int, aggregate_type: str | None = None) -> list[Event]:
    """`count` events on a topic of their own."""
    aggregate_type = aggregate_type or _name("status")
    post = uuid.uuid4()
    return [
        new_event(
            tenant_id=DEFAULT_TENANT_ID,
            aggregate_type=aggregate_type,
            aggregate_id=post,
            payload=events_pb2.PostLiked(post_id=str(post), user_id=str(uuid.UUID(int=n))),
        )
        for n in range(count)
    ]


async def _publish_aged(db: Database, events: Sequence[Event], ages: Sequence[float]) -> None:
    """Publishes `events`, each stamped as published `ages[i]` seconds ago."""
    async with PostgresLog(db).publisher() as publisher:
        await publisher.publish(events)
    async with db.connection() as conn:
        await conn.executemany(
            "UPDATE nova_events.log SET published_at = now() - make_interval(secs => $2)"
            " WHERE event_id = $1",
            [(event.event_id, age) for event, age in zip(events, ages, strict=True)],
        )


async def _commit_next(db: Database, group: str, events: Sequence[Event], count: int) -> int:
    """Commits the next `count` of `events` for `group`; returns the last one's seq."""
    async with PostgresLog(db).subscribe(group, [events[0].topic]) as subscription:
        deliveries: list[Delivery] = []
        while len(deliveries) < count:
            batch = await subscription.fetch(count - len(deliveries), 5.0)
            assert batch, f"only {len(deliveries)} of {count} events came"
            deliveries += batch
        await subscription.commit(deliveries)
    return deliveries[-1].offset


async def _until(
    read: Callable[[], Awaitable[GroupLag]], done: Callable[[GroupLag], bool]
) -> GroupLag:
    """Reads until `done` holds (members come and go asynchronously); fails after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        lag = await read()
        if done(lag) or time.monotonic() > deadline:
            return lag
        await asyncio.sleep(0.05)


async def test_the_log_counts_a_groups_backlog_and_the_age_of_its_oldest(
    deps: Dependencies,
) -> None:
    events = _events(5)
    await _publish_aged(deps.db, events, [500, 400, 300, 200, 100])
    other = _events(2)
    await _publish_aged(deps.db, other, [50, 40])
    topic, other_topic = events[0].topic, other[0].topic
    group = _name("lag-")
    seq = await _commit_next(deps.db, group, events, 2)

    log = PostgresLog(deps.db)
    lag = await log.lag(group, [other_topic])
    by_topic = {t.topic: t for t in lag.topics}
    assert set(by_topic) == {topic, other_topic}
    behind = by_topic[topic]
    assert (behind.positions, behind.events) == ({0: seq}, 3)
    assert 300 <= behind.seconds < 330, "the third event, 300 s old, is the oldest unread"
    never = by_topic[other_topic]
    assert (never.positions, never.events) == ({0: None}, 2)
    assert 50 <= never.seconds < 80
    assert (lag.events, lag.members, lag.standby) == (5, 0, 0)
    assert lag.seconds == behind.seconds
    # Without topics asked for: the ones it has positions on.
    assert [t.topic for t in (await log.lag(group)).topics] == [topic]
    assert group in await log.groups()

    await _commit_next(deps.db, group, events, 3)
    caught_up = (await log.lag(group)).topics
    assert [(t.events, t.seconds) for t in caught_up] == [(0, 0.0)]


async def test_the_log_shows_the_active_member_and_a_standby_waiting(deps: Dependencies) -> None:
    events = _events(1)
    await _publish_aged(deps.db, events, [0])
    topic, group = events[0].topic, _name("members-")
    log = PostgresLog(deps.db)
    release = asyncio.Event()

    async def standby() -> None:
        async with log.subscribe(group, [topic]):
            await release.wait()

    async with log.subscribe(group, [topic]):
        waiting = asyncio.create_task(standby())
        both = await _until(lambda: log.lag(group), lambda lag: lag.standby == 1)
        assert (both.members, both.standby) == (1, 1)
    taken_over = await _until(lambda: log.lag(group), lambda lag: lag.standby == 0)
    assert (taken_over.members, taken_over.standby) == (1, 0)
    release.set()
    await waiting
    gone = await _until(lambda: log.lag(group), lambda lag: lag.members == 0)
    assert (gone.members, gone.standby) == (0, 0)


async def _produce(bootstrap: str, topic: str, records: Sequence[tuple[int, float]]) -> None:
    """Writes one record per (partition, age in seconds), with that age as its timestamp."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        now_ms = time.time() * 1000
        for partition, age in records:
            await producer.send_and_wait(
                topic, b"lag", partition=partition, timestamp_ms=int(now_ms - age * 1000)
            )
    finally:
        await producer.stop()


async def test_kafka_counts_a_groups_backlog_per_partition_and_its_members(
    kafka: KafkaTransport, kafka_bootstrap: str
) -> None:
    topic, group = f"nova.{_name('status')}.v1", _name("lag-")
    await kafka.ensure_topics([topic])
    await _produce(
        kafka_bootstrap, topic, [(0, 500), (0, 400), (0, 300), (0, 200), (0, 100), *[(1, 50)] * 3]
    )
    async with kafka.subscribe(group, [topic]) as subscription:
        deadline = time.monotonic() + 20
        while len(subscription.consumer.assignment()) < 2:
            assert time.monotonic() < deadline, "the group's one member never got both partitions"
            await subscription.fetch(100, 0.1)
        # Offsets 0 and 1 of partition 0 processed; nothing of partition 1.
        await subscription.commit([Delivery.of_record(b"", topic, 0, 1)])
        running = await _until(lambda: kafka.lag(group), lambda lag: lag.members == 1)
    assert running.members == 1
    [lag] = running.topics
    assert lag.topic == topic
    assert (lag.positions, lag.events) == ({0: 2, 1: None}, 3 + 3)
    assert 300 <= lag.seconds < 330, "partition 0's offset 2, 300 s old, is the oldest unread"

    stopped = await _until(lambda: kafka.lag(group), lambda lag: lag.members == 0)
    assert stopped.members == 0
    assert [(t.topic, t.events) for t in stopped.topics] == [(topic, 6)], "found by its commits"
    assert group in await kafka.groups()
    stranger = await kafka.lag(_name("never-"), [topic])
    assert stranger.topics == (TopicLag(topic, {0: None, 1: None}, 8, stranger.seconds),)
    assert 500 <= stranger.seconds < 530


async def test_lag_gauges_are_on_the_prometheus_endpoint(deps: Dependencies) -> None:
    events = _events(4)
    await _publish_aged(deps.db, events, [120, 60, 30, 10])
    group = _name("gauged-")
    await _commit_next(deps.db, group, events, 1)
    with prometheus_endpoint("127.0.0.1", 0) as endpoint:
        gauges = LagGauges(
            PostgresLog(deps.db),
            {group: [events[0].topic]},
            meter=endpoint.meter_provider.get_meter("nova.events"),
        )
        await gauges.sample()
        samples = await scrape(endpoint)
    labels = {"group": group, "topic": events[0].topic}
    assert value(samples, "nova_events_consumer_lag", **labels) == 3
    seconds = value(samples, "nova_events_consumer_lag_seconds", **labels)
    assert seconds is not None
    assert 60 <= seconds < 90


async def test_status_counts_open_dead_letters_and_parked_events(deps: Dependencies) -> None:
    events = _events(3)
    await _publish_aged(deps.db, events, [0, 0, 0])
    group, quiet = _name("status-"), _name("quiet-")
    await _commit_next(deps.db, group, events, 1)
    async with deps.db.connection() as conn:
        await conn.executemany(
            """INSERT INTO nova_events.dead_letters
                   (group_name, event_id, event_type, topic, envelope, error, attempts,
                    replayed_at, discarded_at)
               VALUES ($1, $2, 'PostLiked', $3, $4, 'boom', 5,
                       CASE WHEN $5 = 'replayed' THEN now() END,
                       CASE WHEN $5 = 'discarded' THEN now() END)""",
            [
                (group, uuid.uuid4(), events[0].topic, b"", state)
                for state in ("open", "open", "replayed", "discarded")
            ],
        )
        await conn.executemany(
            """INSERT INTO nova_events.parked
                   (group_name, topic, aggregate_id, event_id, event_type, partition,
                    position, envelope)
               VALUES ($1, $2, $3, $4, 'PostLiked', 0, $5, $6)""",
            [
                (group, e.topic, e.aggregate_id, e.event_id, n, e.envelope)
                for n, e in enumerate(events[1:])
            ],
        )
    statuses = await group_statuses(
        PostgresLog(deps.db), deps.db, {group: [events[0].topic], quiet: [events[0].topic]}
    )
    by_group = {status.lag.group: status for status in statuses}
    mine = by_group[group]
    assert (mine.open_dead_letters, mine.parked, mine.lag.events) == (2, 2, 2)
    never_ran = by_group[quiet]
    assert (never_ran.open_dead_letters, never_ran.parked, never_ran.lag.events) == (0, 0, 3)
    assert [t.positions for t in never_ran.lag.topics] == [{0: None}]
