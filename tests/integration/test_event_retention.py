"""Retention: the PostgreSQL log's entries and the processed-event ids older than the
retention period are deleted, except the entries a registered consumer group has not
committed yet; a group idle past the abandon period stops holding them, and losing them
is logged and counted."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
from structlog.testing import capture_logs

from nova.events.v1 import events_pb2
from services.runtime.db import Database, open_database
from services.runtime.events.envelope import new_event
from services.runtime.events.model import Delivery, Event
from services.runtime.events.pglog import PostgresLog
from services.runtime.events.retention import Retention
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.process import migrate_services
from tests.conftest import fresh_database
from tests.integration.test_client_fakes import Metrics

RETENTION = 7 * 86400.0
ABANDON = 30 * 86400.0


@pytest.fixture(scope="module")
async def db(server_url: str) -> AsyncIterator[Database]:
    """A database of its own: retention weighs every group's position, and the groups
    other tests leave behind on the shared topics would hold back what these delete."""
    async with (
        fresh_database(server_url, "nova_retention") as url,
        open_database(url, size=4, acquire_timeout_ms=5000) as opened,
    ):
        await migrate_services(opened, ())
        yield opened


def _events(count: int) -> list[Event]:
    """`count` events on a topic of their own (an aggregate type no other test uses)."""
    aggregate_type = f"retention{uuid.uuid4().hex[:8]}"
    events = []
    for _ in range(count):
        post = uuid.uuid4()
        events.append(
            new_event(
                tenant_id=DEFAULT_TENANT_ID,
                aggregate_type=aggregate_type,
                aggregate_id=post,
                payload=events_pb2.PostCreated(post_id=str(post), author_id="someone"),
            )
        )
    return events


async def _publish_aged(db: Database, events: Sequence[Event], aged: int) -> None:
    """Publishes `events`; the first `aged` of them were published 8 days ago."""
    async with PostgresLog(db).publisher() as publisher:
        await publisher.publish(events)
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE nova_events.log SET published_at = now() - interval '8 days'"
            " WHERE event_id = ANY($1::uuid[])",
            [event.event_id for event in events[:aged]],
        )


async def _kept(db: Database, events: Sequence[Event]) -> list[int]:
    """The indexes in `events` of those still in the log."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT event_id FROM nova_events.log WHERE event_id = ANY($1::uuid[])",
            [event.event_id for event in events],
        )
    present = {row["event_id"] for row in rows}
    return [index for index, event in enumerate(events) if event.event_id in present]


async def _commit_through(db: Database, group: str, events: Sequence[Event], upto: int) -> None:
    """Subscribes `group` to the events' topic and commits the first `upto` of them."""
    topic = events[0].topic
    async with PostgresLog(db).subscribe(group, [topic]) as subscription:
        deliveries: list[Delivery] = []
        while len(deliveries) < upto:
            batch = await subscription.fetch(upto - len(deliveries), 5.0)
            assert batch, f"only {len(deliveries)} of {upto} events came"
            deliveries += batch
        assert [d.event.event_id for d in deliveries] == [e.event_id for e in events[:upto]]
        await subscription.commit(deliveries)


async def test_entries_and_processed_ids_past_retention_are_deleted(db: Database) -> None:
    old, young = _events(2)
    await _publish_aged(db, [old, young], aged=1)
    group = f"retention-{uuid.uuid4().hex[:8]}"
    async with db.connection() as conn:
        await conn.executemany(
            "INSERT INTO nova_events.processed_events (group_name, event_id) VALUES ($1, $2)",
            [(group, old.event_id), (group, young.event_id)],
        )
        await conn.execute(
            "UPDATE nova_events.processed_events SET processed_at = now() - interval '8 days'"
            " WHERE event_id = $1",
            old.event_id,
        )
    pruned = await Retention(db, RETENTION, ABANDON, meter=Metrics().meter).prune()
    assert (pruned.log_entries, pruned.processed_events) >= (1, 1)
    assert await _kept(db, [old, young]) == [1]
    async with db.connection() as conn:
        still_processed = await conn.fetch(
            "SELECT event_id FROM nova_events.processed_events WHERE group_name = $1", group
        )
    assert [row["event_id"] for row in still_processed] == [young.event_id]


async def test_an_entry_a_lagging_group_has_not_committed_is_kept(db: Database) -> None:
    events = _events(4)
    await _publish_aged(db, events, aged=3)
    ahead, behind = f"ahead-{uuid.uuid4().hex[:8]}", f"behind-{uuid.uuid4().hex[:8]}"
    await _commit_through(db, ahead, events, upto=4)
    await _commit_through(db, behind, events, upto=1)
    metrics = Metrics()
    with capture_logs() as logs:
        pruned = await Retention(db, RETENTION, ABANDON, meter=metrics.meter).prune()
    # The slowest live group has committed only the first: the other two old ones wait.
    assert await _kept(db, events) == [1, 2, 3]
    assert pruned.unread == {}
    assert metrics.total("nova.events.retention.unread_deleted") == 0
    assert not [line for line in logs if line["log_level"] == "warning"]


async def test_a_group_idle_past_the_abandon_period_stops_holding_entries(db: Database) -> None:
    events = _events(4)
    await _publish_aged(db, events, aged=3)
    idle, live = f"idle-{uuid.uuid4().hex[:8]}", f"live-{uuid.uuid4().hex[:8]}"
    await _commit_through(db, idle, events, upto=1)
    await _commit_through(db, live, events, upto=2)
    async with db.connection() as conn:
        idle_since = await conn.fetchval(
            "UPDATE nova_events.offsets SET seen_at = now() - interval '31 days'"
            " WHERE group_name = $1 RETURNING seen_at",
            idle,
        )
    metrics = Metrics()
    with capture_logs() as logs:
        pruned = await Retention(db, RETENTION, ABANDON, meter=metrics.meter).prune()
    # Now only the live group counts: it had committed two, so the third old one stays.
    assert await _kept(db, events) == [2, 3]
    assert pruned.unread == {idle: 1}
    assert metrics.points("nova.events.retention.unread_deleted") == [({"group": idle}, 1)]
    warnings = [line for line in logs if line["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["group"] == idle
    assert warnings[0]["entries"] == 1
    assert warnings[0]["idle_since"] == idle_since.isoformat(timespec="seconds")
    assert warnings[0]["topics"] == [events[0].topic]
    assert "abandoned consumer group had not read" in warnings[0]["event"]


async def test_subscribing_registers_the_group_so_retention_waits_for_it(db: Database) -> None:
    events = _events(2)
    await _publish_aged(db, events, aged=2)
    group = f"new-{uuid.uuid4().hex[:8]}"
    async with PostgresLog(db).subscribe(group, [events[0].topic]):
        pass  # subscribed, never committed: registered at position 0
    await Retention(db, RETENTION, ABANDON, meter=Metrics().meter).prune()
    assert await _kept(db, events) == [0, 1]
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT topic, seq, seen_at > now() - interval '1 minute' AS fresh"
            " FROM nova_events.offsets WHERE group_name = $1",
            group,
        )
    assert [(row["topic"], row["seq"], row["fresh"]) for row in rows] == [
        (events[0].topic, 0, True)
    ]


async def test_a_topic_no_group_reads_is_pruned_by_age_alone(db: Database) -> None:
    events = _events(3)
    await _publish_aged(db, events, aged=2)
    await Retention(db, RETENTION, ABANDON, meter=Metrics().meter).prune()
    assert await _kept(db, events) == [2]


async def test_a_running_member_keeps_its_group_alive_without_committing(db: Database) -> None:
    events = _events(2)
    await _publish_aged(db, events, aged=2)
    group = f"running-{uuid.uuid4().hex[:8]}"
    async with PostgresLog(db).subscribe(group, [events[0].topic]) as subscription:
        async with db.connection() as conn:
            await conn.execute(
                "UPDATE nova_events.offsets SET seen_at = now() - interval '31 days'"
                " WHERE group_name = $1",
                group,
            )
        subscription.seen_due = time.monotonic()  # its periodic refresh is due
        await subscription.fetch(1, 0)
        pruned = await Retention(db, RETENTION, ABANDON, meter=Metrics().meter).prune()
    assert pruned.unread == {}
    assert await _kept(db, events) == [0, 1]
