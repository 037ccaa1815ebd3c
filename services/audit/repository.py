"""SQL for the audit log: write one entry, read a tenant's history newest first.

Pages are keyset pages on (occurred_at, event_id), the order of the indexes, so a page
deep in a long history costs what the first one does and stays stable while new entries
arrive. The statements are module constants so tests can EXPLAIN what runs.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.runtime.db import Database
from services.runtime.errors import InvalidArgument

SCHEMA = "audit_service"

MAX_LIMIT = 1000

_NEWEST = (datetime.max.replace(tzinfo=UTC), uuid.UUID(int=(1 << 128) - 1))
"""Sorts after every entry: a first page asks for entries older than this rather than
passing NULL, so the cursor condition stays an index range condition."""

INSERT_SQL = """
    INSERT INTO audit_service.audit_log
        (tenant_id, event_id, event_type, aggregate_type, aggregate_id, occurred_at, summary)
    VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
    ON CONFLICT (tenant_id, event_id) DO NOTHING
"""


def list_sql(*, by_aggregate: bool, by_event_type: bool) -> str:
    """The page query: $1 tenant, $2/$3 cursor (entries strictly older), $4 limit, then
    $5 aggregate id and/or the event type (the next free parameter). One text per filter
    combination, so each gets a plan that uses its index."""
    filters = ""
    parameter = 5
    if by_aggregate:
        filters += f" AND aggregate_id = ${parameter}"
        parameter += 1
    if by_event_type:
        filters += f" AND event_type = ${parameter}"
    return f"""
    SELECT tenant_id, event_id, event_type, aggregate_type, aggregate_id, occurred_at,
           recorded_at, summary
      FROM audit_service.audit_log
     WHERE tenant_id = $1 AND (occurred_at, event_id) < ($2, $3){filters}
     ORDER BY occurred_at DESC, event_id DESC
     LIMIT $4
"""


@dataclass(frozen=True)
class AuditEntry:
    tenant_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    aggregate_type: str
    aggregate_id: str
    occurred_at: datetime
    summary: dict[str, Any]
    """The payload's fields as JSON: {"post_id": "…", "author_id": "…"}."""
    recorded_at: datetime | None = None
    """When the audit consumer wrote it (set by the database; None before insert)."""


@dataclass(frozen=True)
class AuditCursor:
    """Where a page ended: the next page holds entries older than this one."""

    occurred_at: datetime
    event_id: uuid.UUID

    def encode(self) -> str:
        """An opaque token for a command line or an API."""
        raw = f"v1|{self.occurred_at.isoformat()}|{self.event_id}".encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @staticmethod
    def decode(token: str) -> AuditCursor:
        try:
            raw = base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)).decode()
            version, occurred_at, event_id = raw.split("|")
            if version == "v1":
                return AuditCursor(datetime.fromisoformat(occurred_at), uuid.UUID(event_id))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            pass
        raise InvalidArgument(
            f"{token!r} is not an audit page token; pass the one the previous page returned"
        )


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    next_cursor: AuditCursor | None
    """None on the last page."""


async def insert_entry(conn: asyncpg.Connection, entry: AuditEntry) -> bool:
    """Writes `entry` on `conn` (the consumer's transaction); False if the tenant already
    has an entry for this event (a second line of defence behind processed_events)."""
    status = await conn.execute(
        INSERT_SQL,
        entry.tenant_id,
        entry.event_id,
        entry.event_type,
        entry.aggregate_type,
        entry.aggregate_id,
        entry.occurred_at,
        json.dumps(entry.summary),
    )
    return bool(status == "INSERT 0 1")


async def count_event(conn: asyncpg.Connection, tenant_id: uuid.UUID, event_type: str) -> None:
    """Adds one to the tenant's tally of `event_type`."""
    await conn.execute(
        """INSERT INTO audit_service.event_counts (tenant_id, event_type, count)
           VALUES ($1, $2, 1)
           ON CONFLICT (tenant_id, event_type)
           DO UPDATE SET count = audit_service.event_counts.count + 1""",
        tenant_id,
        event_type,
    )


async def event_counts(db: Database, tenant_id: uuid.UUID) -> dict[str, int]:
    """The tenant's tallies, by event type."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            """SELECT event_type, count FROM audit_service.event_counts
                WHERE tenant_id = $1 ORDER BY event_type""",
            tenant_id,
        )
    return {row["event_type"]: row["count"] for row in rows}


async def list_entries(
    db: Database,
    tenant_id: uuid.UUID,
    *,
    aggregate_id: str | None = None,
    event_type: str | None = None,
    after: AuditCursor | None = None,
    limit: int = 50,
) -> AuditPage:
    """A tenant's entries, newest first (by occurred_at, then event id), optionally of one
    aggregate and/or one event type, starting after `after` (the previous page's
    next_cursor)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgument(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    cursor = (after.occurred_at, after.event_id) if after is not None else _NEWEST
    filters = [value for value in (aggregate_id, event_type) if value is not None]
    sql = list_sql(by_aggregate=aggregate_id is not None, by_event_type=event_type is not None)
    async with db.connection() as conn:
        rows = await conn.fetch(sql, tenant_id, *cursor, limit + 1, *filters)
    entries = [_entry(row) for row in rows[:limit]]
    more = len(rows) > limit
    last = entries[-1] if entries else None
    return AuditPage(
        entries=entries,
        next_cursor=AuditCursor(last.occurred_at, last.event_id) if more and last else None,
    )


def _entry(row: asyncpg.Record) -> AuditEntry:
    return AuditEntry(
        tenant_id=row["tenant_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        aggregate_type=row["aggregate_type"],
        aggregate_id=row["aggregate_id"],
        occurred_at=row["occurred_at"],
        summary=json.loads(row["summary"]),
        recorded_at=row["recorded_at"],
    )
