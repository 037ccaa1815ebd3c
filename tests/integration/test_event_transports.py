"""Both event transports against real brokers: the PostgreSQL log in the session's database
and Kafka on a Tansu broker. What consumers rely on is checked on each: order per
aggregate, intact envelopes, at-least-once across restarts, independent groups, rewind;
then what only one has: Kafka's headers, the log's wake-up, single active member, and
its sequence that concurrent publishers cannot make a reader skip.

Topics are shared by every test, so each test publishes events of its own aggregates,
reads under groups of its own, and looks only at its own events among what it reads.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from nova.events.v1 import events_pb2
from services.registry import REGISTRY
from services.runtime.events.envelope import new_event
from services.runtime.events.kafka import KafkaTransport
from services.runtime.events.model import (
    Delivery,
    Event,
    GroupActiveError,
    Subscription,
    Transport,
    topic_for,
)
from services.runtime.events.pglog import PostgresLog
from services.runtime.events.settings import EventSettings
from services.runtime.events.transports import KafkaUnavailableError, open_transport
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.spec import Dependencies
from tests.brokers import free_port, single_node_settings, single_node_transport

POST_TOPIC = topic_for("post")


EXTERNAL_KAFKA = bool(os.environ.get("NOVA_TEST_KAFKA_BOOTSTRAP"))
"""A broker the session did not start may be a stock Kafka, which refuses session timeouts
under 6 s; the session's own Tansu gets short ones, since there a join takes about half
the session timeout."""


@pytest.fixture(scope="module")
async def kafka(kafka_bootstrap: str) -> AsyncIterator[KafkaTransport]:
    timeouts = {} if EXTERNAL_KAFKA else {"session_timeout_ms": 1000, "heartbeat_interval_ms": 100}
    async with single_node_transport(kafka_bootstrap, **timeouts) as transport:
        yield transport


@pytest.fixture(params=["postgres", "kafka"])
def transport(request: pytest.FixtureRequest, deps: Dependencies) -> Transport:
    if request.param == "kafka":
        kafka: KafkaTransport = request.getfixturevalue("kafka")
        return kafka
    return PostgresLog(deps.db)


def _group(name: str) -> str:
    return f"test-{name}-{uuid.uuid4().hex[:8]}"


def _likes(count: int, post_id: str | None = None) -> list[Event]:
    """`count` events of one new post, in the order they happened."""
    post = post_id or str(uuid.uuid4())
    return [
        new_event(
            tenant_id=DEFAULT_TENANT_ID,
            aggregate_type="post",
            aggregate_id=post,
            payload=events_pb2.PostLiked(post_id=post, user_id=str(uuid.UUID(int=n))),
        )
        for n in range(count)
    ]


async def _publish(transport: Transport, *batches: Sequence[Event]) -> None:
    async with transport.publisher() as publisher:
        for batch in batches:
            await publisher.publish(batch)


async def _read(
    subscription: Subscription, wanted: Sequence[Event], count: int | None = None
) -> tuple[list[Delivery], list[Delivery]]:
    """Fetches until `count` (default: all) deliveries of `wanted` events came; returns
    those and everything fetched on the way (other tests' events included)."""
    ids = {event.event_id for event in wanted}
    count = len(wanted) if count is None else count
    ours: list[Delivery] = []
    fetched: list[Delivery] = []
    deadline = time.monotonic() + 20
    while len(ours) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(ours)} of {count} events came"
        batch = await subscription.fetch(1000, min(remaining, 1.0))
        fetched += batch
        ours += [delivery for delivery in batch if delivery.event.event_id in ids]
    return ours, fetched


async def _none_of(subscription: Subscription, wanted: Sequence[Event]) -> None:
    ids = {event.event_id for event in wanted}
    for _ in range(2):
        batch = await subscription.fetch(1000, 0.2)
        assert not [delivery for delivery in batch if delivery.event.event_id in ids]


async def test_events_come_back_in_order_per_aggregate_with_intact_envelopes(
    transport: Transport,
) -> None:
    first, second = _likes(5), _likes(5)
    interleaved = [event for pair in zip(first, second, strict=True) for event in pair]
    await _publish(transport, interleaved[:4], interleaved[4:])

    async with transport.subscribe(_group("order"), [POST_TOPIC]) as subscription:
        ours, _ = await _read(subscription, interleaved)
        # Handed out once per subscription, even though nothing was committed.
        await _none_of(subscription, interleaved)

    for aggregate in (first, second):
        received = [d.event for d in ours if d.event.aggregate_id == aggregate[0].aggregate_id]
        assert received == aggregate
    assert all(delivery.topic == POST_TOPIC for delivery in ours)
    liked = events_pb2.PostLiked()
    assert ours[0].event.decode().payload.Unpack(liked)
    assert liked.post_id == ours[0].event.aggregate_id


async def test_a_group_continues_after_its_commit_and_rereads_what_it_did_not_commit(
    transport: Transport,
) -> None:
    events = _likes(6)
    await _publish(transport, events)
    group = _group("restart")

    async with transport.subscribe(group, [POST_TOPIC]) as subscription:
        ours, fetched = await _read(subscription, events)
        third = fetched.index(ours[2])
        await subscription.commit(fetched[: third + 1])

    async with transport.subscribe(group, [POST_TOPIC]) as subscription:
        again, _ = await _read(subscription, events, 3)
        await _none_of(subscription, events)

    assert [delivery.event for delivery in again] == events[3:]


async def test_two_groups_each_get_every_event(transport: Transport) -> None:
    events = _likes(4)
    await _publish(transport, events)

    async def read_all(group: str) -> list[Event]:
        async with transport.subscribe(group, REGISTRY.topics) as subscription:
            ours, _ = await _read(subscription, events)
            return [delivery.event for delivery in ours]

    got = await asyncio.gather(read_all(_group("one")), read_all(_group("two")))

    assert list(got) == [events, events]


async def test_rewind_to_a_time_and_to_the_beginning(transport: Transport) -> None:
    before, after = _likes(3), []
    post = before[0].aggregate_id
    await _publish(transport, before)
    await asyncio.sleep(0.2)
    since = datetime.now(UTC)
    await asyncio.sleep(0.2)
    after = _likes(3, post)
    await _publish(transport, after)
    group = _group("rewind")
    async with transport.subscribe(group, [POST_TOPIC]) as subscription:
        ours, fetched = await _read(subscription, before + after)
        await subscription.commit(fetched)

    await transport.rewind(group, [POST_TOPIC], since)
    async with transport.subscribe(group, [POST_TOPIC]) as subscription:
        ours, _ = await _read(subscription, before + after, 3)
    assert [delivery.event for delivery in ours] == after

    await transport.rewind(group, [POST_TOPIC], None)
    async with transport.subscribe(group, [POST_TOPIC]) as subscription:
        ours, _ = await _read(subscription, before + after)
    assert [delivery.event for delivery in ours] == before + after


async def test_rewind_to_after_the_last_event_skips_the_backlog(transport: Transport) -> None:
    events = _likes(2)
    await _publish(transport, events)
    group = _group("skip")

    await transport.rewind(group, [POST_TOPIC], datetime.now(UTC))
    later = _likes(1)
    await _publish(transport, later)
    async with transport.subscribe(group, [POST_TOPIC]) as subscription:
        _, fetched = await _read(subscription, later)

    assert not {delivery.event for delivery in fetched} & set(events)


async def test_kafka_messages_carry_the_key_and_the_event_id_and_type_as_headers(
    kafka: KafkaTransport,
) -> None:
    [event] = _likes(1)
    await _publish(kafka, [event])

    reader = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        await reader.topics()
        partitions = [
            TopicPartition(POST_TOPIC, p) for p in reader.partitions_for_topic(POST_TOPIC)
        ]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        found = None
        deadline = time.monotonic() + 10
        while found is None and time.monotonic() < deadline:
            for records in (await reader.getmany(timeout_ms=500)).values():
                found = next((r for r in records if r.value == event.envelope), found)
    finally:
        await reader.stop()

    assert found is not None
    assert found.key == event.aggregate_id.encode()
    assert dict(found.headers) == {
        "event-id": str(event.event_id).encode(),
        "event-type": b"PostLiked",
    }


async def test_kafka_a_first_member_that_stopped_does_not_hold_up_the_next_join(
    kafka_bootstrap: str,
) -> None:
    # Tansu numbers a new group's first generation 0, for which aiokafka sends no
    # LeaveGroup; without the transport's own, the restart waits out the old session.
    session_ms = 6000 if EXTERNAL_KAFKA else 4000
    events = _likes(1)
    async with single_node_transport(
        kafka_bootstrap,
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=session_ms // 4,
    ) as kafka:
        await _publish(kafka, events)
        group = _group("leave")
        async with kafka.subscribe(group, [POST_TOPIC]) as subscription:
            await _read(subscription, events)
        restarted = time.monotonic()
        async with kafka.subscribe(group, [POST_TOPIC]) as subscription:
            await _read(subscription, events)

        assert time.monotonic() - restarted < session_ms / 1000


async def test_log_fetch_wakes_on_publish_without_waiting_for_the_recheck(
    deps: Dependencies,
) -> None:
    log = PostgresLog(deps.db)
    group = _group("wake")
    await log.rewind(group, REGISTRY.topics, datetime.now(UTC))
    events = _likes(1)
    async with log.subscribe(group, REGISTRY.topics) as subscription:
        waiting = asyncio.create_task(subscription.fetch(100, 5.0))
        await asyncio.sleep(0.2)
        published = time.monotonic()
        await _publish(log, events)
        deliveries = await waiting
        latency = time.monotonic() - published

    assert [delivery.event for delivery in deliveries] == events
    # The re-check would come 0.8 s after the publish; NOTIFY brings it at once.
    assert latency < 0.3


async def test_log_second_member_of_a_group_waits_and_takes_over_from_the_commit(
    deps: Dependencies,
) -> None:
    log = PostgresLog(deps.db)
    group = _group("standby")
    events = _likes(2)
    await _publish(log, events)
    standby_read: list[Event] = []
    standby_in = asyncio.Event()

    async def standby() -> None:
        async with log.subscribe(group, [POST_TOPIC]) as subscription:
            standby_in.set()
            ours, _ = await _read(subscription, events, 1)
            standby_read.extend(delivery.event for delivery in ours)

    async with log.subscribe(group, [POST_TOPIC]) as active:
        waiting = asyncio.create_task(standby())
        ours, fetched = await _read(active, events)
        await active.commit(fetched[: fetched.index(ours[0]) + 1])
        await asyncio.sleep(0.5)
        assert not standby_in.is_set()
        with pytest.raises(GroupActiveError, match="stop its consumers"):
            await log.rewind(group, [POST_TOPIC], None)
    await asyncio.wait_for(standby_in.wait(), 2)
    await asyncio.wait_for(waiting, 10)

    assert standby_read == events[1:]


async def test_log_concurrent_publishers_never_make_a_reader_skip(deps: Dependencies) -> None:
    log = PostgresLog(deps.db)
    group = _group("race")
    await log.rewind(group, REGISTRY.topics, datetime.now(UTC))
    streams = [_likes(200) for _ in range(4)]
    everything = [event for stream in streams for event in stream]

    async def publish(stream: list[Event]) -> None:
        async with log.publisher() as publisher:
            for start in range(0, len(stream), 3):
                await publisher.publish(stream[start : start + 3])

    async with log.subscribe(group, REGISTRY.topics) as subscription:
        reading = asyncio.create_task(_read(subscription, everything))
        await asyncio.gather(*(publish(stream) for stream in streams))
        ours, _ = await reading
        await _none_of(subscription, everything)

    received = [delivery.event for delivery in ours]
    assert len(set(received)) == len(everything)
    for stream in streams:
        assert [event for event in received if event.aggregate_id == stream[0].aggregate_id] == (
            stream
        )


async def test_open_transport_picks_kafka_when_configured_and_postgres_otherwise(
    deps: Dependencies, kafka_bootstrap: str
) -> None:
    async with open_transport(deps.db, EventSettings()) as transport:
        assert transport.name == "postgres"
    settings = single_node_settings(EventSettings(kafka_partitions=2), kafka_bootstrap)
    async with open_transport(deps.db, settings) as transport:
        assert transport.name == "kafka"
        # NOVA_KAFKA_PARTITIONS reaches the topics the transport creates.
        assert isinstance(transport, KafkaTransport)
        topic = f"nova.partitions_{uuid.uuid4().hex[:8]}.v1"
        await transport.ensure_topics([topic])
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
            assert len(described["partitions"]) == 2
        finally:
            await admin.close()


async def test_open_transport_says_what_to_do_when_kafka_is_unreachable(
    deps: Dependencies,
) -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(KafkaUnavailableError, match="NOVA_KAFKA_BOOTSTRAP"):
        async with open_transport(deps.db, EventSettings(kafka_bootstrap=address)):
            pass
