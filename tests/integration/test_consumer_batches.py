"""A consumer's batch in one transaction without a savepoint per event: the processed
records of a run go in one statement, and a handler failing in the middle of a batch
rolls the run back and has it applied again without the failing event, so every event
still has one effect, the failing one gets exactly its attempts, and what has no handler
is counted once. Against real PostgreSQL and the PostgreSQL log."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from nova.events.v1 import events_pb2
from services.registry import REGISTRY
from services.runtime.db import Database
from services.runtime.events.consumer import Consumer, ConsumerSettings
from services.runtime.events.dead_letters import list_dead_letters
from services.runtime.events.effects import mark_all_processed
from services.runtime.events.envelope import new_event
from services.runtime.events.model import Event
from services.runtime.events.pglog import PostgresLog
from services.runtime.spec import Dependencies


@pytest.fixture(scope="module")
async def db(deps: Dependencies) -> AsyncIterator[Database]:
    async with deps.db.connection() as conn:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS batch_test")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS batch_test.effects (group_name text, event_id uuid)"
        )
    yield deps.db
    async with deps.db.connection() as conn:
        await conn.execute("DROP SCHEMA batch_test CASCADE")


def _event(kind: str) -> Event:
    aggregate = uuid.uuid4()
    payload: events_pb2.PostCreated | events_pb2.UserCreated
    if kind == "post":
        payload = events_pb2.PostCreated(post_id=str(aggregate), author_id=str(uuid.uuid4()))
    else:
        payload = events_pb2.UserCreated(user_id=str(aggregate), handle="ada")
    return new_event(
        tenant_id=uuid.uuid4(), aggregate_type=kind, aggregate_id=aggregate, payload=payload
    )


async def test_recording_a_run_returns_only_the_ids_new_to_the_group(db: Database) -> None:
    group = f"batch-{uuid.uuid4().hex[:8]}"
    before, one, two = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with db.transaction() as conn:
        assert await mark_all_processed(conn, group, [before]) == {before}
    async with db.transaction() as conn:
        assert await mark_all_processed(conn, group, [one, before, two, one]) == {one, two}
        count = await conn.fetchval(
            "SELECT count(*) FROM nova_events.processed_events WHERE group_name = $1", group
        )
    assert count == 3


async def test_a_failure_in_the_middle_of_a_batch_keeps_one_effect_each_and_its_attempts(
    db: Database,
) -> None:
    log, group = PostgresLog(db), f"batch-{uuid.uuid4().hex[:8]}"
    first, second, poison, last = (_event("post") for _ in range(4))
    unhandled = [_event("user"), _event("user")]
    batch = [first, unhandled[0], second, poison, unhandled[1], last]
    calls: list[uuid.UUID] = []

    async def handler(
        conn: asyncpg.Connection, event: Event, envelope: events_pb2.EventEnvelope
    ) -> None:
        calls.append(event.event_id)
        await conn.execute("INSERT INTO batch_test.effects VALUES ($1, $2)", group, event.event_id)
        if event.event_id == poison.event_id:
            raise ValueError("poison")

    async with db.connection() as conn:
        since = await conn.fetchval("SELECT clock_timestamp()")
    await log.rewind(group, REGISTRY.topics, since)
    async with log.publisher() as publisher:
        await publisher.publish(batch)
    settings = ConsumerSettings(
        batch_size=10, fetch_timeout_seconds=0.1, max_attempts=3, retry_backoff_seconds=0.01
    )
    consumer = Consumer(group, log, db, REGISTRY.topics, settings=settings)
    consumer.on("PostCreated", handler)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        for _ in range(1000):
            if consumer.stats.batches >= 1:
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)

    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT event_id FROM batch_test.effects WHERE group_name = $1", group
        )
    assert sorted(row["event_id"] for row in rows) == sorted(
        [first.event_id, second.event_id, last.event_id]
    )
    # Together (rolled back at the poison), again without it, then the poison's two
    # retries on their own, then the rest of the batch.
    ids = [first.event_id, second.event_id, poison.event_id]
    assert calls == [*ids, *ids[:2], poison.event_id, poison.event_id, last.event_id]
    stats = consumer.stats
    assert (stats.processed, stats.skipped, stats.duplicates) == (3, 2, 0)
    assert (stats.retries, stats.dead_lettered) == (2, 1)
    [letter] = await list_dead_letters(db, group)
    assert (letter.event_id, letter.attempts) == (poison.event_id, 3)
