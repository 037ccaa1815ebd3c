"""The outbox relay against real PostgreSQL and the PostgreSQL log: each committed event is
published once and marked sent, several relays never publish a row twice nor overtake
each other on one aggregate, a failed publish leaves the rows for the next pass, the
backlog is exported, and sent rows are pruned after retention."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest

from nova.events.v1 import events_pb2
from services.runtime.db import Database
from services.runtime.events import outbox
from services.runtime.events.envelope import new_event
from services.runtime.events.model import Event, Publisher
from services.runtime.events.pglog import PostgresLog
from services.runtime.events.relay import Relay
from services.runtime.events.settings import EventSettings
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.spec import Dependencies
from tests.integration.test_client_fakes import Metrics


@pytest.fixture
async def schema(deps: Dependencies) -> AsyncIterator[str]:
    """An outbox of its own, so counts are this test's alone."""
    name = f"relay_test_{uuid.uuid4().hex[:10]}"
    async with deps.db.connection() as conn:
        assert await outbox.migrate_outbox(conn, name) == ["0001_create_outbox.sql"]
    yield name
    async with deps.db.connection() as conn:
        await conn.execute(f"DROP SCHEMA {name} CASCADE")


def _liked(post_id: str, user: int) -> Event:
    return new_event(
        tenant_id=DEFAULT_TENANT_ID,
        aggregate_type="post",
        aggregate_id=post_id,
        payload=events_pb2.PostLiked(post_id=post_id, user_id=str(uuid.UUID(int=user))),
    )


async def _write(db: Database, schema: str, events: Sequence[Event]) -> None:
    async with db.transaction() as conn:
        await outbox.append(conn, schema, events)


async def _published(db: Database, events: Sequence[Event]) -> list[uuid.UUID]:
    """The ids of `events` found in the PostgreSQL log, in log order (with repeats)."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT event_id FROM nova_events.log WHERE event_id = ANY($1::uuid[]) ORDER BY seq",
            [event.event_id for event in events],
        )
    return [row["event_id"] for row in rows]


async def _unsent(db: Database, schema: str) -> int:
    async with db.connection() as conn:
        count = await conn.fetchval(f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL")
    assert isinstance(count, int)
    return count


async def test_committed_events_are_published_once_and_marked_sent(
    deps: Dependencies, schema: str
) -> None:
    metrics = Metrics()
    events = [_liked(f"post-{uuid.uuid4()}", user) for user in range(5)]
    await _write(deps.db, schema, events)
    async with PostgresLog(deps.db).publisher() as publisher:
        relay = Relay(deps.db, publisher, [schema], EventSettings(), meter=metrics.meter)
        assert await relay.relay_once(schema) == 5
        assert await relay.relay_once(schema) == 0
    assert await _published(deps.db, events) == [event.event_id for event in events]
    assert await _unsent(deps.db, schema) == 0
    assert metrics.total("nova.events.relayed") == 5
    assert metrics.total("nova.events.outbox.unsent") == 0


async def test_the_backlog_is_exported_while_rows_wait(deps: Dependencies, schema: str) -> None:
    metrics = Metrics()
    settings = EventSettings(relay_batch_size=2)
    await _write(deps.db, schema, [_liked(f"post-{uuid.uuid4()}", user) for user in range(5)])
    await asyncio.sleep(0.05)
    async with PostgresLog(deps.db).publisher() as publisher:
        relay = Relay(deps.db, publisher, [schema], settings, meter=metrics.meter)
        await relay.relay_once(schema)
    assert metrics.total("nova.events.outbox.unsent") == 3
    assert metrics.total("nova.events.outbox.oldest_unsent_age") >= 0.05


async def test_concurrent_relays_publish_each_row_once_in_aggregate_order(
    deps: Dependencies, schema: str
) -> None:
    posts = [f"post-{uuid.uuid4()}" for _ in range(20)]
    events = [_liked(posts[index % len(posts)], index) for index in range(1000)]
    for start in range(0, len(events), 50):
        await _write(deps.db, schema, events[start : start + 50])
    settings = EventSettings(relay_batch_size=37, relay_poll_seconds=0.02)
    stop = asyncio.Event()
    async with PostgresLog(deps.db).publisher() as publisher:
        relays = [Relay(deps.db, publisher, [schema], settings) for _ in range(3)]
        tasks = [asyncio.create_task(relay.run(stop)) for relay in relays]
        for _ in range(500):
            if await _unsent(deps.db, schema) == 0:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.gather(*tasks)
    published = await _published(deps.db, events)
    assert sorted(published) == sorted(event.event_id for event in events)  # each once
    assert all(relay.stats.published > 0 for relay in relays), "the relays shared the work"
    order = {event_id: index for index, event_id in enumerate(published)}
    for post in posts:
        ours = [event.event_id for event in events if event.aggregate_id == post]
        assert sorted(ours, key=order.__getitem__) == ours, f"{post} out of order"


class FailingOnce:
    """Fault injection around the real publisher: its first publish raises (a broker
    outage), later ones go through."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher
        self.failed = False

    async def publish(self, events: Sequence[Event]) -> None:
        if not self.failed:
            self.failed = True
            raise ConnectionError("broker unreachable")
        await self._publisher.publish(events)


async def test_a_failed_publish_leaves_the_rows_for_the_next_pass(
    deps: Dependencies, schema: str
) -> None:
    events = [_liked(f"post-{uuid.uuid4()}", user) for user in range(3)]
    await _write(deps.db, schema, events)
    async with PostgresLog(deps.db).publisher() as real:
        failing = FailingOnce(real)
        relay = Relay(deps.db, failing, [schema], EventSettings())
        with pytest.raises(ConnectionError):
            await relay.relay_once(schema)
        assert await _unsent(deps.db, schema) == 3
        assert await _published(deps.db, events) == []
        assert await relay.relay_once(schema) == 3
    assert await _published(deps.db, events) == [event.event_id for event in events]


async def test_sent_rows_are_pruned_after_retention_and_unsent_never(
    deps: Dependencies, schema: str
) -> None:
    sent = [_liked(f"post-{uuid.uuid4()}", user) for user in range(4)]
    await _write(deps.db, schema, sent)
    async with PostgresLog(deps.db).publisher() as publisher:
        relay = Relay(deps.db, publisher, [schema], EventSettings(outbox_retention_seconds=3600))
        await relay.relay_once(schema)
        await _write(deps.db, schema, [_liked(f"post-{uuid.uuid4()}", 9)])
        async with deps.db.connection() as conn:
            await conn.execute(
                f"""UPDATE {schema}.outbox SET sent_at = now() - interval '2 hours'
                     WHERE event_id = ANY($1::uuid[])""",
                [event.event_id for event in sent[:3]],
            )
        assert await relay.prune(schema) == 3
    async with deps.db.connection() as conn:
        left = await conn.fetchval(f"SELECT count(*) FROM {schema}.outbox")
    assert left == 2  # one sent within retention, one unsent
