"""Retention of what the event path keeps in PostgreSQL besides the outboxes (which the
relay prunes): the embedded log's entries and the consumers' processed-event ids.

Both are kept for `NOVA_EVENT_RETENTION_HOURS` (7 days by default), and a log entry past
that is still kept while a registered consumer group (one with offsets rows: each that
ever subscribed, pglog.py) has not committed past it, so a group that is down or slow
loses nothing. Only a group idle past `NOVA_EVENT_ABANDON_HOURS` (30 days by default; its
rows' `seen_at` is that old) stops holding entries: those it had not read are deleted
with the rest, and retention says so, once per group and pass, in a warning line (group,
idle since, entries) and in `nova.events.retention.unread_deleted{group}`.

Processed-event ids are still deleted after the retention period alone: an entry kept
longer for a slow group is one that group has not processed, and a group that had
processed it only sees it again when rewound to before the retention period.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import structlog
from opentelemetry import metrics

from services.runtime.db import Database

_log = structlog.get_logger("nova.events")

_BATCH = 5000
_EVERY_SECONDS = 300.0

_CUTOFFS = """
SELECT now() - make_interval(secs => $1) AS retained, now() - make_interval(secs => $2) AS live
"""
# Entries are deleted up to the last one published before the retention cutoff (one
# lookup in published_at's index; seq order follows it, pglog.py), and per topic no
# further than the lowest position of the groups seen since the abandon cutoff. The
# topics are found with a loose index scan of (topic, seq): one probe per topic.
_NEWEST_EXPIRED = """
SELECT seq FROM nova_events.log WHERE published_at < $1 ORDER BY published_at DESC LIMIT 1
"""
_TOPIC_FLOORS = """
WITH RECURSIVE topics AS (
    (SELECT topic FROM nova_events.log ORDER BY topic LIMIT 1)
    UNION ALL
    SELECT (SELECT l.topic FROM nova_events.log l WHERE l.topic > t.topic
             ORDER BY l.topic LIMIT 1)
      FROM topics t WHERE t.topic IS NOT NULL
)
SELECT t.topic,
       (SELECT min(o.seq) FROM nova_events.offsets o
         WHERE o.topic = t.topic AND o.seen_at >= $1) AS floor
FROM topics t WHERE t.topic IS NOT NULL
"""
_ABANDONED = """
SELECT group_name, topic, seq, seen_at FROM nova_events.offsets
 WHERE seen_at < $1 AND topic = ANY($2::text[]) AND seq < $3
"""
_UNREAD = """
SELECT count(*) FROM nova_events.log
 WHERE topic = $1 AND seq > $2 AND seq <= $3 AND published_at < $4
"""
# `= ANY(ARRAY(…))` deletes the batch by primary key; `IN (SELECT …)` was planned as a
# hash join over a scan of the whole log, 130 ms a batch at 1M entries against 8 ms.
_PRUNE_LOG = """
DELETE FROM nova_events.log
 WHERE seq = ANY(ARRAY(SELECT seq FROM nova_events.log
                        WHERE topic = $1 AND seq <= $2 AND published_at < $3
                        ORDER BY seq LIMIT $4))
"""
_PRUNE_PROCESSED = """
DELETE FROM nova_events.processed_events
 WHERE (group_name, event_id) IN (
       SELECT group_name, event_id FROM nova_events.processed_events
        WHERE processed_at < now() - make_interval(secs => $1)
        LIMIT $2)
"""


@dataclass(frozen=True)
class Pruned:
    """What one pass deleted."""

    log_entries: int
    processed_events: int
    unread: dict[str, int] = field(default_factory=dict)
    """Per abandoned group, the deleted entries it had not committed."""


@dataclass(frozen=True)
class _Unread:
    group: str
    idle_since: datetime
    entries: int
    topics: tuple[str, ...]


class Retention:
    """Prunes the log and the processed-event ids: ``await Retention(db, 7 * 86400,
    30 * 86400).run(stop)`` (every five minutes), or `prune()` for one pass."""

    def __init__(
        self,
        db: Database,
        retention_seconds: float,
        abandon_seconds: float,
        *,
        meter: metrics.Meter | None = None,
    ) -> None:
        self._db = db
        self._retention_seconds = retention_seconds
        self._abandon_seconds = abandon_seconds
        meter = meter if meter is not None else metrics.get_meter("nova.events")
        self._unread_deleted = meter.create_counter(
            "nova.events.retention.unread_deleted",
            unit="{event}",
            description="Log entries deleted before an abandoned consumer group read them.",
        )

    async def prune(self) -> Pruned:
        """One pass: deletes what is past retention, a batch at a time, and reports the
        entries abandoned groups lose."""
        log_entries, unread = await self._prune_log()
        processed = await _delete_all(self._db, _PRUNE_PROCESSED, self._retention_seconds)
        for lost in unread:
            _log.warning(
                "deleted log entries an abandoned consumer group had not read",
                group=lost.group,
                idle_since=lost.idle_since.isoformat(timespec="seconds"),
                entries=lost.entries,
                topics=list(lost.topics),
            )
            self._unread_deleted.add(lost.entries, {"group": lost.group})
        return Pruned(log_entries, processed, {lost.group: lost.entries for lost in unread})

    async def run(self, stop: asyncio.Event) -> None:
        """Prunes now and every five minutes until `stop` is set."""
        while not stop.is_set():
            pruned = await self.prune()
            if pruned.log_entries or pruned.processed_events:
                _log.info(
                    "pruned",
                    log_entries=pruned.log_entries,
                    processed_events=pruned.processed_events,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _EVERY_SECONDS)

    async def _prune_log(self) -> tuple[int, list[_Unread]]:
        async with self._db.connection() as conn:
            cutoffs = await conn.fetchrow(_CUTOFFS, self._retention_seconds, self._abandon_seconds)
            assert cutoffs is not None  # a SELECT without FROM returns one row
            retained, live = cutoffs["retained"], cutoffs["live"]
            newest = await conn.fetchval(_NEWEST_EXPIRED, retained)
            if newest is None:
                return 0, []
            bounds = {
                row["topic"]: newest if row["floor"] is None else min(newest, row["floor"])
                for row in await conn.fetch(_TOPIC_FLOORS, live)
            }
            unread = await _unread(conn, bounds, live, retained)
        deleted = 0
        for topic, upto in bounds.items():
            while True:
                async with self._db.connection() as conn:
                    status = await conn.execute(_PRUNE_LOG, topic, upto, retained, _BATCH)
                count = int(status.split()[-1])
                deleted += count
                if count < _BATCH:
                    break
        return deleted, unread


async def _unread(
    conn: asyncpg.Connection, bounds: dict[str, int], live: datetime, retained: datetime
) -> list[_Unread]:
    """Per abandoned group, what the deletion up to `bounds` takes that it has not read."""
    if not bounds:
        return []
    entries: dict[str, int] = defaultdict(int)
    topics: dict[str, list[str]] = defaultdict(list)
    idle_since: dict[str, datetime] = {}
    rows = await conn.fetch(_ABANDONED, live, list(bounds), max(bounds.values()))
    for row in rows:
        group, topic = row["group_name"], row["topic"]
        count = await conn.fetchval(_UNREAD, topic, row["seq"], bounds[topic], retained)
        if count:
            entries[group] += count
            topics[group].append(topic)
            idle_since[group] = max(idle_since.get(group, row["seen_at"]), row["seen_at"])
    return [
        _Unread(group, idle_since[group], entries[group], tuple(sorted(topics[group])))
        for group in sorted(entries)
    ]


async def _delete_all(db: Database, sql: str, retention_seconds: float) -> int:
    deleted = 0
    while True:
        async with db.connection() as conn:
            status = await conn.execute(sql, retention_seconds, _BATCH)
        count = int(status.split()[-1])
        deleted += count
        if count < _BATCH:
            return deleted
