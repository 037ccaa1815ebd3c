"""Retention: the PostgreSQL log's entries and the processed-event ids older than the
retention period are deleted; younger ones, and everything else, stay."""

from __future__ import annotations

import uuid

from nova.events.v1 import events_pb2
from services.runtime.events.envelope import new_event
from services.runtime.events.model import Event
from services.runtime.events.pglog import PostgresLog
from services.runtime.events.retention import prune
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.spec import Dependencies


def _event() -> Event:
    post = uuid.uuid4()
    return new_event(
        tenant_id=DEFAULT_TENANT_ID,
        aggregate_type="post",
        aggregate_id=post,
        payload=events_pb2.PostCreated(post_id=str(post), author_id="someone"),
    )


async def test_entries_and_processed_ids_past_retention_are_deleted(deps: Dependencies) -> None:
    old, young = _event(), _event()
    async with PostgresLog(deps.db).publisher() as publisher:
        await publisher.publish([old, young])
    group = f"retention-{uuid.uuid4().hex[:8]}"
    async with deps.db.connection() as conn:
        await conn.executemany(
            "INSERT INTO nova_events.processed_events (group_name, event_id) VALUES ($1, $2)",
            [(group, old.event_id), (group, young.event_id)],
        )
        await conn.execute(
            "UPDATE nova_events.log SET published_at = now() - interval '8 days'"
            " WHERE event_id = $1",
            old.event_id,
        )
        await conn.execute(
            "UPDATE nova_events.processed_events SET processed_at = now() - interval '8 days'"
            " WHERE event_id = $1",
            old.event_id,
        )
    log_entries, processed = await prune(deps.db, retention_seconds=7 * 86400)
    assert (log_entries, processed) >= (1, 1)
    async with deps.db.connection() as conn:
        in_log = await conn.fetch(
            "SELECT event_id FROM nova_events.log WHERE event_id = ANY($1::uuid[])",
            [old.event_id, young.event_id],
        )
        still_processed = await conn.fetch(
            "SELECT event_id FROM nova_events.processed_events WHERE group_name = $1", group
        )
    assert [row["event_id"] for row in in_log] == [young.event_id]
    assert [row["event_id"] for row in still_processed] == [young.event_id]
