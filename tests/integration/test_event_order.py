"""Order after a dead letter, on the PostgreSQL log and on Kafka: once a group dead-letters
an event, it parks the later events of that aggregate (Unfollowed after a Followed that
failed) while other aggregates flow on, and applies them in order once the letter is
replayed or discarded; a parked event that fails in turn holds the aggregate again.

The handlers keep a follow graph: Followed inserts an edge, Unfollowed deletes it. Applied
out of order (Unfollowed, then the replayed Followed), an edge would be left that the
follower had removed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from nova.events.v1 import events_pb2
from services.runtime.db import Database
from services.runtime.events.consumer import Consumer, ConsumerSettings
from services.runtime.events.dead_letters import (
    discard_dead_letters,
    list_dead_letters,
    request_replay,
)
from services.runtime.events.envelope import new_event
from services.runtime.events.kafka import KafkaTransport
from services.runtime.events.model import Event, Transport
from services.runtime.events.pglog import PostgresLog
from services.runtime.spec import Dependencies
from tests.brokers import single_node_transport
from tests.integration.test_event_transports import EXTERNAL_KAFKA

SETTINGS = ConsumerSettings(
    batch_size=10,
    fetch_timeout_seconds=0.1,
    max_attempts=2,
    retry_backoff_seconds=0.01,
    maintenance_interval_seconds=0.05,
)


@pytest.fixture(scope="module")
async def graph(deps: Dependencies) -> AsyncIterator[Database]:
    async with deps.db.connection() as conn:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS order_test")
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS order_test.follows (
                   group_name text, follower text, followee text)"""
        )
    yield deps.db
    async with deps.db.connection() as conn:
        await conn.execute("DROP SCHEMA order_test CASCADE")


@pytest.fixture(scope="module")
async def kafka(kafka_bootstrap: str) -> AsyncIterator[KafkaTransport]:
    timeouts = {} if EXTERNAL_KAFKA else {"session_timeout_ms": 1000, "heartbeat_interval_ms": 100}
    async with single_node_transport(kafka_bootstrap, partitions=2, **timeouts) as transport:
        yield transport


@pytest.fixture(params=["postgres", "kafka"])
def transport(request: pytest.FixtureRequest, graph: Database) -> tuple[Transport, str]:
    """A transport and an aggregate type (so a topic) of this test's own: no other test's
    events arrive."""
    topic_type = f"order{uuid.uuid4().hex[:10]}"
    if request.param == "postgres":
        return PostgresLog(graph), topic_type
    kafka: KafkaTransport = request.getfixturevalue("kafka")
    return kafka, topic_type


class Graph:
    """The group's handlers, with Followed edges that fail while listed in `broken`."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.broken: set[tuple[str, str]] = set()

    async def followed(
        self, conn: asyncpg.Connection, event: Event, envelope: events_pb2.EventEnvelope
    ) -> None:
        payload = events_pb2.Followed()
        envelope.payload.Unpack(payload)
        edge = (payload.follower_id, payload.followee_id)
        if edge in self.broken:
            raise LookupError(f"no user {edge[1]}")
        await conn.execute("INSERT INTO order_test.follows VALUES ($1, $2, $3)", self.group, *edge)

    async def unfollowed(
        self, conn: asyncpg.Connection, event: Event, envelope: events_pb2.EventEnvelope
    ) -> None:
        payload = events_pb2.Unfollowed()
        envelope.payload.Unpack(payload)
        await conn.execute(
            "DELETE FROM order_test.follows WHERE group_name = $1 AND follower = $2 "
            "AND followee = $3",
            self.group,
            payload.follower_id,
            payload.followee_id,
        )


def _follow(topic_type: str, follower: str, followee: str, *, undo: bool = False) -> Event:
    payload: events_pb2.Unfollowed | events_pb2.Followed = (
        events_pb2.Unfollowed(follower_id=follower, followee_id=followee)
        if undo
        else events_pb2.Followed(follower_id=follower, followee_id=followee)
    )
    return new_event(
        tenant_id=uuid.UUID(int=1),
        aggregate_type=topic_type,
        aggregate_id=uuid.uuid5(uuid.NAMESPACE_OID, follower),
        payload=payload,
    )


async def _edges(db: Database, group: str) -> set[tuple[str, str]]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT follower, followee FROM order_test.follows WHERE group_name = $1", group
        )
    return {(row["follower"], row["followee"]) for row in rows}


async def _run_until(
    transport: Transport,
    db: Database,
    graph: Graph,
    topic_type: str,
    done: Callable[[Consumer], bool],
) -> Consumer:
    consumer = Consumer(graph.group, transport, db, [f"nova.{topic_type}.v1"], settings=SETTINGS)
    consumer.on("Followed", graph.followed)
    consumer.on("Unfollowed", graph.unfollowed)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        for _ in range(1500):
            if done(consumer):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"{graph.group} did not get there in 30 s: {consumer.stats}")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    return consumer


async def _publish(transport: Transport, *events: Event) -> None:
    async with transport.publisher() as publisher:
        await publisher.publish(events)


async def _blocked_behind_a_dead_letter(
    transport: Transport, db: Database, topic_type: str, graph: Graph
) -> Consumer:
    """ada follows bob (fails), then unfollows bob; cy follows dee (fine)."""
    graph.broken.add(("ada", "bob"))
    await _publish(
        transport,
        _follow(topic_type, "ada", "bob"),
        _follow(topic_type, "ada", "bob", undo=True),
        _follow(topic_type, "cy", "dee"),
    )
    first = await _run_until(
        transport,
        db,
        graph,
        topic_type,
        lambda c: c.stats.dead_lettered + c.stats.parked + c.stats.processed == 3,
    )
    assert (first.stats.dead_lettered, first.stats.parked, first.stats.processed) == (1, 1, 1)
    assert await _edges(db, graph.group) == {("cy", "dee")}, "other aggregates flow on"
    [letter] = await list_dead_letters(db, graph.group)
    assert (letter.event_type, letter.parked, letter.error) == (
        "Followed",
        1,
        "LookupError: no user bob",
    )
    return first


async def test_unfollowed_waits_behind_its_failed_followed_until_the_replay(
    graph: Database, transport: tuple[Transport, str]
) -> None:
    bus, topic_type = transport
    handlers = Graph(f"test-order-{uuid.uuid4().hex[:8]}")
    await _blocked_behind_a_dead_letter(bus, graph, topic_type, handlers)

    # A later event of the held aggregate is parked too, even in a new run.
    await _publish(bus, _follow(topic_type, "ada", "eve"))
    held = await _run_until(bus, graph, handlers, topic_type, lambda c: c.stats.parked == 1)
    assert held.stats.processed == 0
    [letter] = await list_dead_letters(graph, handlers.group)
    assert letter.parked == 2

    handlers.broken.clear()
    await request_replay(graph, [letter.id])
    done = await _run_until(bus, graph, handlers, topic_type, lambda c: c.stats.released == 2)
    assert (done.stats.replayed, done.stats.processed) == (1, 3)
    # Followed, then Unfollowed, then the new follow: bob is not followed.
    assert await _edges(graph, handlers.group) == {("cy", "dee"), ("ada", "eve")}
    assert await list_dead_letters(graph, handlers.group) == []


async def test_a_discarded_dead_letter_lets_its_aggregate_flow_on(
    graph: Database, transport: tuple[Transport, str]
) -> None:
    bus, topic_type = transport
    handlers = Graph(f"test-order-{uuid.uuid4().hex[:8]}")
    await _blocked_behind_a_dead_letter(bus, graph, topic_type, handlers)

    [discarded] = await discard_dead_letters(graph, group=handlers.group)
    assert discarded.parked == 1
    done = await _run_until(bus, graph, handlers, topic_type, lambda c: c.stats.released == 1)
    assert done.stats.replayed == 0
    assert await _edges(graph, handlers.group) == {("cy", "dee")}, "bob was never followed"
    [closed] = await list_dead_letters(graph, handlers.group, include_replayed=True)
    assert (closed.id, closed.parked) == (discarded.id, 0)
    assert closed.discarded_at is not None
    assert closed.replayed_at is None


async def test_a_parked_event_that_fails_on_release_holds_its_aggregate_again(
    graph: Database, transport: tuple[Transport, str]
) -> None:
    bus, topic_type = transport
    handlers = Graph(f"test-order-{uuid.uuid4().hex[:8]}")
    await _blocked_behind_a_dead_letter(bus, graph, topic_type, handlers)
    await _publish(bus, _follow(topic_type, "ada", "fay"), _follow(topic_type, "ada", "gus"))
    await _run_until(bus, graph, handlers, topic_type, lambda c: c.stats.parked == 2)

    handlers.broken = {("ada", "fay")}  # bob's user exists now, fay's does not
    [letter] = await list_dead_letters(graph, handlers.group)
    await request_replay(graph, group=handlers.group)
    stuck = await _run_until(bus, graph, handlers, topic_type, lambda c: c.stats.dead_lettered == 1)
    assert (stuck.stats.replayed, stuck.stats.released) == (1, 2), "the unfollow, then fay"
    assert await _edges(graph, handlers.group) == {("cy", "dee")}
    [again] = await list_dead_letters(graph, handlers.group)
    assert again.id != letter.id
    assert (again.event_type, again.parked, again.error) == (
        "Followed",
        1,
        "LookupError: no user fay",
    )

    handlers.broken.clear()
    await request_replay(graph, [again.id])
    await _run_until(bus, graph, handlers, topic_type, lambda c: c.stats.released == 1)
    assert await _edges(graph, handlers.group) == {("cy", "dee"), ("ada", "fay"), ("ada", "gus")}


async def test_a_replay_that_fails_again_stays_open_with_the_new_error(graph: Database) -> None:
    bus, topic_type = PostgresLog(graph), f"order{uuid.uuid4().hex[:10]}"
    handlers = Graph(f"test-order-{uuid.uuid4().hex[:8]}")
    await _blocked_behind_a_dead_letter(bus, graph, topic_type, handlers)
    [letter] = await request_replay(graph, group=handlers.group)
    retried = await _run_until(
        bus, graph, handlers, topic_type, lambda c: c.stats.retries == SETTINGS.max_attempts - 1
    )
    assert retried.stats.replayed == 0
    [still] = await list_dead_letters(graph, handlers.group)
    assert (still.id, still.replay_requested_at, still.parked) == (letter.id, None, 1)
    assert still.attempts == 2 * SETTINGS.max_attempts
