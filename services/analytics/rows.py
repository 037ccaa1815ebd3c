"""The rows analytics writes to ClickHouse, encoded as JSONEachRow lines (what the journal
keeps and what one INSERT takes), and the tables they go to."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

ZERO_ID = uuid.UUID(int=0)
"""Where an event has no user or no post (ClickHouse's UUID default)."""


@dataclass(frozen=True)
class Target:
    table: str
    columns: tuple[str, ...]


EVENTS = Target(
    "events", ("tenant_id", "event_id", "event_type", "user_id", "post_id", "occurred_at")
)
IMPRESSIONS = Target("impressions", ("tenant_id", "user_id", "post_id", "viewed_at", "dwell_ms"))
TARGETS = {target.table: target for target in (EVENTS, IMPRESSIONS)}


@dataclass(frozen=True, slots=True)
class ImpressionRow:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    post_id: uuid.UUID
    viewed_at: datetime
    dwell_ms: int


@dataclass(frozen=True, slots=True)
class EventRow:
    tenant_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    user_id: uuid.UUID
    post_id: uuid.UUID
    occurred_at: datetime


def clickhouse_time(moment: datetime) -> str:
    """DateTime64(3, 'UTC') text: "2026-12-03 10:00:00.123"."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def encode_impressions(rows: Iterable[ImpressionRow]) -> bytes:
    return b"\n".join(
        orjson.dumps(
            {
                "tenant_id": str(row.tenant_id),
                "user_id": str(row.user_id),
                "post_id": str(row.post_id),
                "viewed_at": clickhouse_time(row.viewed_at),
                "dwell_ms": row.dwell_ms,
            }
        )
        for row in rows
    )


def encode_event(row: EventRow) -> bytes:
    return orjson.dumps(
        {
            "tenant_id": str(row.tenant_id),
            "event_id": str(row.event_id),
            "event_type": row.event_type,
            "user_id": str(row.user_id),
            "post_id": str(row.post_id),
            "occurred_at": clickhouse_time(row.occurred_at),
        }
    )
