"""The transactional outbox: an event is written in the transaction of the change it
records, into the owning service's schema, so it exists exactly when the change does.

Each service schema has an `outbox` table (its migrations create it with OUTBOX_DDL's
columns); the relay (services.runtime.events.relay) publishes and marks its rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import asyncpg

from services.runtime.events.model import Event

_SCHEMA = re.compile(r"[a-z_][a-z0-9_]*")


NOTIFY_CHANNEL = "nova_outbox"
"""Writers notify it (payload: the schema) when they commit events, to wake the relay."""


def checked_schema(schema: str) -> str:
    """`schema`, if it is a plain lowercase identifier (it is put into SQL text)."""
    if not _SCHEMA.fullmatch(schema):
        raise ValueError(f"schema name {schema!r} must be a lowercase identifier")
    return schema


async def append(conn: asyncpg.Connection, schema: str, events: Sequence[Event]) -> None:
    """Writes `events` to `schema`.outbox on `conn`, which must be inside the transaction
    of the change they record (asyncpg: `async with conn.transaction()`)."""
    if not events:
        return
    if not conn.is_in_transaction():
        raise RuntimeError("outbox.append must run inside the transaction of the change")
    await conn.executemany(
        f"""INSERT INTO {checked_schema(schema)}.outbox
                (event_id, tenant_id, aggregate_type, aggregate_id, event_type,
                 occurred_at, envelope)
            VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        [
            (
                event.event_id,
                event.tenant_id,
                event.aggregate_type,
                event.aggregate_id,
                event.event_type,
                event.occurred_at,
                event.envelope,
            )
            for event in events
        ],
    )
    # Delivered when the transaction commits (and only then), once per transaction.
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, schema)


OUTBOX_DDL = """
-- The transactional outbox (services/runtime/events/outbox.py): written in the
-- transaction of each change, published and marked by the relay, pruned after retention.
CREATE TABLE {schema}.outbox (
    -- Assigned at insert: the relay publishes in this order, which for one aggregate is
    -- the order its changes committed (they lock the aggregate's row).
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    tenant_id      uuid        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    event_type     text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    envelope       bytea       NOT NULL,
    sent_at        timestamptz
);
-- What the relay claims: small, since sent rows leave it.
CREATE INDEX outbox_unsent_idx ON {schema}.outbox (id) WHERE sent_at IS NULL;
CREATE INDEX outbox_unsent_aggregate_idx ON {schema}.outbox (aggregate_id, id)
    WHERE sent_at IS NULL;
-- What pruning deletes.
CREATE INDEX outbox_sent_idx ON {schema}.outbox (sent_at) WHERE sent_at IS NOT NULL;
"""
"""The outbox table's definition; a service's migration holds it with its schema filled
in (migrations are plain SQL files, checked by checksum, so they are not generated)."""
