"""Retention of what the event path keeps in PostgreSQL besides the outboxes (which the
relay prunes): the embedded log's entries and the consumers' processed-event ids.

Both are kept for `NOVA_EVENT_RETENTION_HOURS` (7 days by default), as a Kafka topic keeps
its records for its retention: a consumer group that falls further behind than that loses
the oldest events, and an event redelivered after its processed record expired would be
applied again — which is why the two share one period, and why it should be longer than
any consumer outage you plan to recover from by replay.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from services.runtime.db import Database

_log = structlog.get_logger("nova.events")

_BATCH = 5000
_EVERY_SECONDS = 300.0

_PRUNE_LOG = """
DELETE FROM nova_events.log
 WHERE seq IN (SELECT seq FROM nova_events.log
                WHERE published_at < now() - make_interval(secs => $1)
                ORDER BY seq LIMIT $2)
"""
_PRUNE_PROCESSED = """
DELETE FROM nova_events.processed_events
 WHERE (group_name, event_id) IN (
       SELECT group_name, event_id FROM nova_events.processed_events
        WHERE processed_at < now() - make_interval(secs => $1)
        LIMIT $2)
"""


async def prune(db: Database, retention_seconds: float) -> tuple[int, int]:
    """Deletes log entries and processed-event records older than the retention period,
    a batch at a time; returns (log entries, processed records) deleted."""
    return (
        await _delete_all(db, _PRUNE_LOG, retention_seconds),
        await _delete_all(db, _PRUNE_PROCESSED, retention_seconds),
    )


async def _delete_all(db: Database, sql: str, retention_seconds: float) -> int:
    deleted = 0
    while True:
        async with db.connection() as conn:
            status = await conn.execute(sql, retention_seconds, _BATCH)
        count = int(status.split()[-1])
        deleted += count
        if count < _BATCH:
            return deleted


async def run_pruning(db: Database, retention_seconds: float, stop: asyncio.Event) -> None:
    """Prunes now and every five minutes until `stop` is set."""
    while not stop.is_set():
        log_entries, processed = await prune(db, retention_seconds)
        if log_entries or processed:
            _log.info("pruned", log_entries=log_entries, processed_events=processed)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _EVERY_SECONDS)
