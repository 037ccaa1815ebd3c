"""The transactional outbox: an event is written in the transaction of the change it
records, into the owning service's schema, so it exists exactly when the change does.

Each service that declares aggregate types has an `outbox` table in its schema, created by
the one definition in outbox_migrations/ (migrate_outbox, which the process applies to every
such schema); the relay (services.runtime.events.relay) publishes and marks its rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from services.runtime.events.model import Event
from services.runtime.migrations import migrate

MIGRATIONS = Path(__file__).parent / "outbox_migrations"
"""The outbox's migrations, written once with {schema} for the schema they are applied to,
and recorded apart from the schema's own (in its outbox_migrations table)."""

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


async def migrate_outbox(conn: asyncpg.Connection, schema: str) -> list[str]:
    """Creates or upgrades `schema`.outbox; returns the migrations applied now."""
    return await migrate(conn, schema=schema, directory=MIGRATIONS, track="outbox_migrations")
