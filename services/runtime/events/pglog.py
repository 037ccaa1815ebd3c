"""The embedded event log: the transport when no Kafka is configured, so `./dev up` needs
nothing but the PostgreSQL it already has.

One table, `nova_events.log`, holds every topic in one sequence. Publishers serialize on a
transaction-level advisory lock, so sequence numbers are handed out in commit order: a
reader that has seen seq N has seen every row below N, and "seq > my position" never
skips a row that committed late. Each publish NOTIFYs `nova_events` with the topics it
wrote, so a waiting subscription wakes at once; it still re-reads every second in case a
notification is lost (a listener's connection that dropped, say).

A consumer group has one active member at a time: a session-level advisory lock keyed by
the group name, held on the subscription's own pooled connection. A second member waits
for it; when the first closes, or its process dies and PostgreSQL drops the connection,
the standby takes over from the committed offsets. That connection also carries the
LISTEN and the subscription's queries; closing the subscription removes the listener
(UNLISTEN) and releases the lock itself (pg_advisory_unlock_all) before the connection
goes back to its pool (a connection that broke has lost both already).

Subscribing registers the group: it gets an offsets row per topic (at 0 when new), and its
active member refreshes the rows' `seen_at` on each commit and every 20 s between them. The
log's retention keeps what a group seen lately has not committed (retention.py), and
`lag` (pglog_lag.py) reads the same rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from services.runtime.db import Database
from services.runtime.events.model import Delivery, Event, GroupActiveError, GroupLag
from services.runtime.events.pglog_lag import group_names, postgres_lag

CHANNEL = "nova_events"
"""The NOTIFY channel; each notification's payload is a topic that has new rows."""

_RECHECK_SECONDS = 1.0
_SEEN_EVERY_SECONDS = 20.0
"""How often an active member marks all its topics' rows seen (a commit marks only the
topics it commits), so retention knows the group is alive even on topics that are quiet."""
_GROUP_LOCK_WAIT_MS = 10_000
"""How long one wait for the group lock lasts before it is retried; below the pool's
command timeout, so a standby member can wait forever without its query timing out."""


def _lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for `name`."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


_PUBLISH_LOCK = _lock_key("nova.events.log.publish")


def _group_lock(group: str) -> int:
    return _lock_key(f"nova.events.group:{group}")


_INSERT = """
INSERT INTO nova_events.log (topic, key, event_id, event_type, envelope)
SELECT topic, key, event_id, event_type, envelope
FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::bytea[]) WITH ORDINALITY
     AS e(topic, key, event_id, event_type, envelope, n)
ORDER BY n
"""

_NOTIFY = "SELECT pg_notify($1, topic) FROM unnest($2::text[]) AS t(topic)"

_READ = """
SELECT l.seq, l.topic, l.envelope
FROM unnest($1::text[], $2::bigint[]) AS p(topic, after)
CROSS JOIN LATERAL (
    SELECT seq, topic, envelope FROM nova_events.log
    WHERE topic = p.topic AND seq > p.after
    ORDER BY seq
    LIMIT $3
) AS l
ORDER BY l.seq
LIMIT $3
"""

_REGISTER = """
INSERT INTO nova_events.offsets AS o (group_name, topic, seq)
SELECT $1, topic, 0 FROM unnest($2::text[]) AS t(topic)
ON CONFLICT (group_name, topic) DO UPDATE SET seen_at = now()
RETURNING topic, seq
"""

_SEEN = """
UPDATE nova_events.offsets SET seen_at = now() WHERE group_name = $1 AND topic = ANY($2::text[])
"""

_COMMIT = """
INSERT INTO nova_events.offsets AS o (group_name, topic, seq)
SELECT $1, topic, seq FROM unnest($2::text[], $3::bigint[]) AS c(topic, seq)
ON CONFLICT (group_name, topic) DO UPDATE
    SET seq = greatest(o.seq, excluded.seq), updated_at = now(), seen_at = now()
"""

_REWIND = """
INSERT INTO nova_events.offsets AS o (group_name, topic, seq)
SELECT $1, topic, $3 FROM unnest($2::text[]) AS t(topic)
ON CONFLICT (group_name, topic) DO UPDATE
    SET seq = excluded.seq, updated_at = now(), seen_at = now()
"""

_POSITION_AT = """
SELECT coalesce(
    (SELECT min(seq) - 1 FROM nova_events.log WHERE published_at >= $1),
    (SELECT max(seq) FROM nova_events.log),
    0)
"""


@dataclass
class PostgresLog:
    """The Transport on PostgreSQL (services.runtime.events.model.Transport)."""

    db: Database
    name: str = field(default="postgres", init=False)

    @asynccontextmanager
    async def publisher(self) -> AsyncIterator[PostgresPublisher]:
        yield PostgresPublisher(self.db)

    @asynccontextmanager
    async def subscribe(
        self, group: str, topics: Sequence[str]
    ) -> AsyncIterator[PostgresSubscription]:
        async with self.db.connection() as conn:
            try:
                await _lock_group(conn, group)
                committed = await _register(conn, group, topics)
                subscription = PostgresSubscription(conn, group, committed)
                await conn.add_listener(CHANNEL, subscription.on_notify)
                try:
                    yield subscription
                finally:
                    if not conn.is_closed():
                        await conn.remove_listener(CHANNEL, subscription.on_notify)
            finally:
                await _release_session(conn)

    async def rewind(self, group: str, topics: Sequence[str], since: datetime | None) -> None:
        async with self.db.connection() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _group_lock(group)):
                raise GroupActiveError(
                    f"consumer group {group!r} has a running member; stop its consumers, "
                    "then rewind"
                )
            try:
                position = 0 if since is None else await conn.fetchval(_POSITION_AT, since)
                await conn.execute(_REWIND, group, list(topics), position)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _group_lock(group))

    async def lag(self, group: str, topics: Sequence[str] = ()) -> GroupLag:
        return await postgres_lag(self.db, group, topics, _group_lock(group))

    async def groups(self) -> list[str]:
        return await group_names(self.db)


@dataclass(frozen=True)
class PostgresPublisher:
    db: Database

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        async with self.db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _PUBLISH_LOCK)
            await conn.execute(
                _INSERT,
                [event.topic for event in events],
                [event.aggregate_id for event in events],
                [event.event_id for event in events],
                [event.event_type for event in events],
                [event.envelope for event in events],
            )
            topics = sorted({event.topic for event in events})
            await conn.execute(_NOTIFY, CHANNEL, topics)


@dataclass
class PostgresSubscription:
    """One group member's view: committed offsets, and how far it has read past them."""

    conn: asyncpg.Connection
    group: str
    positions: dict[str, int]
    """Per topic, the last seq handed out (starts at the committed one)."""
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    seen_due: float = field(default_factory=lambda: time.monotonic() + _SEEN_EVERY_SECONDS)
    """When (monotonic seconds) the group's rows are next marked seen."""

    def on_notify(self, conn: object, pid: int, channel: str, payload: object, /) -> None:
        if payload in self.positions:
            self.wakeup.set()

    async def fetch(self, max_events: int, timeout_seconds: float) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while True:
            # Cleared before reading: a NOTIFY that arrives during the query wakes the wait.
            self.wakeup.clear()
            if time.monotonic() >= self.seen_due:
                await self.conn.execute(_SEEN, self.group, list(self.positions))
                self.seen_due = time.monotonic() + _SEEN_EVERY_SECONDS
            deliveries = await self._read(max_events)
            remaining = deadline - loop.time()
            if deliveries or remaining <= 0:
                return deliveries
            with suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), min(remaining, _RECHECK_SECONDS))

    async def _read(self, max_events: int) -> list[Delivery]:
        topics = list(self.positions)
        rows = await self.conn.fetch(
            _READ, topics, [self.positions[topic] for topic in topics], max_events
        )
        deliveries = [
            Delivery.of_record(row["envelope"], row["topic"], 0, row["seq"]) for row in rows
        ]
        for delivery in deliveries:
            self.positions[delivery.topic] = max(self.positions[delivery.topic], delivery.offset)
        return deliveries

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        last: dict[str, int] = {}
        for delivery in deliveries:
            last[delivery.topic] = max(last.get(delivery.topic, 0), delivery.offset)
        if not last:
            return
        await self.conn.execute(_COMMIT, self.group, list(last), list(last.values()))
        for topic, seq in last.items():
            if topic in self.positions:
                self.positions[topic] = max(self.positions[topic], seq)


async def _release_session(conn: asyncpg.Connection) -> None:
    """Ends the group's session lock (however far the subscription got) before the
    connection goes back to its pool, which may hand it on without a reset; a connection
    that cannot is dropped rather than returned holding it."""
    if conn.is_closed():
        return
    try:
        await conn.execute("SELECT pg_advisory_unlock_all()")
    except BaseException:
        conn.terminate()
        raise


async def _lock_group(conn: asyncpg.Connection, group: str) -> None:
    """Waits (for as long as it takes) to become the group's one active member."""
    await conn.execute(f"SET lock_timeout = {_GROUP_LOCK_WAIT_MS}")
    while True:
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", _group_lock(group))
            break
        except asyncpg.LockNotAvailableError:
            continue
    await conn.execute("RESET lock_timeout")


async def _register(conn: asyncpg.Connection, group: str, topics: Sequence[str]) -> dict[str, int]:
    """Marks the group seen on `topics` (new ones at position 0); returns its positions."""
    positions = dict.fromkeys(topics, 0)
    for row in await conn.fetch(_REGISTER, group, list(positions)):
        positions[row["topic"]] = row["seq"]
    return positions
