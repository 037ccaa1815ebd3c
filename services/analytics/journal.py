"""SQL of the insert batcher's journal in PostgreSQL (migrations/0001): rows accepted for
ClickHouse wait in analytics_service.pending_rows until a flusher writes them.

Staging is one INSERT of a JSONEachRow payload, in the caller's transaction when it has
one (the consumer's, beside its processed-event record: staged once per event). A batch
is claimed (batch_id, committed) before it is inserted into ClickHouse and deleted after,
so what a dead flusher claimed is found again and inserted with the same token.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.runtime.db import Database

SCHEMA = "analytics_service"


@dataclass(frozen=True)
class Waiting:
    """What waits for one target: unclaimed entries, and rows claimed but not written (a
    batch in flight, or one a flusher left)."""

    entries: int
    rows: int
    bytes: int
    oldest: datetime | None
    claimed_rows: int


@dataclass(frozen=True)
class Batch:
    id: int
    target: str
    rows: int
    payload: bytes
    """The entries' JSONEachRow payloads, in staging order, as one."""


async def stage(conn: asyncpg.Connection, target: str, rows: int, payload: bytes) -> None:
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.pending_rows (target, row_count, byte_count, payload)
            VALUES ($1, $2, $3, $4)""",
        target,
        rows,
        len(payload),
        payload,
    )


async def journal_id(db: Database) -> uuid.UUID:
    async with db.connection() as conn:
        found: uuid.UUID = await conn.fetchval(f"SELECT id FROM {SCHEMA}.journal")
    return found


async def waiting(db: Database, target: str) -> Waiting:
    async with db.connection() as conn:
        row = await conn.fetchrow(
            f"""SELECT count(*) FILTER (WHERE batch_id IS NULL) AS entries,
                       coalesce(sum(row_count) FILTER (WHERE batch_id IS NULL), 0) AS rows,
                       coalesce(sum(byte_count) FILTER (WHERE batch_id IS NULL), 0) AS bytes,
                       min(staged_at) FILTER (WHERE batch_id IS NULL) AS oldest,
                       coalesce(sum(row_count) FILTER (WHERE batch_id IS NOT NULL), 0)
                           AS claimed_rows
                  FROM {SCHEMA}.pending_rows WHERE target = $1""",
            target,
        )
    assert row is not None
    return Waiting(
        int(row["entries"]),
        int(row["rows"]),
        int(row["bytes"]),
        row["oldest"],
        int(row["claimed_rows"]),
    )


async def claim(db: Database, target: str, *, max_rows: int, max_bytes: int) -> int | None:
    """Claims the oldest waiting entries, up to max_rows rows and max_bytes bytes (at least
    one entry), as a new batch; None when nothing waits. Entries another flusher is
    claiming are passed over (SKIP LOCKED)."""
    async with db.transaction() as conn:
        rows = await conn.fetch(
            f"""SELECT id, row_count, byte_count FROM {SCHEMA}.pending_rows
                 WHERE target = $1 AND batch_id IS NULL
                 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED""",
            target,
            max_rows,
        )
        ids: list[int] = []
        total_rows = total_bytes = 0
        for row in rows:
            if ids and (
                total_rows + row["row_count"] > max_rows
                or total_bytes + row["byte_count"] > max_bytes
            ):
                break
            ids.append(row["id"])
            total_rows += row["row_count"]
            total_bytes += row["byte_count"]
        if not ids:
            return None
        batch_id: int = await conn.fetchval(f"SELECT nextval('{SCHEMA}.batch_ids')")
        await conn.execute(
            f"""UPDATE {SCHEMA}.pending_rows SET batch_id = $1, claimed_at = now()
                 WHERE id = ANY($2::bigint[])""",
            batch_id,
            ids,
        )
    return batch_id


async def left_behind(db: Database, target: str, *, older_than_seconds: float) -> list[int]:
    """Batches claimed longer ago than that and still here: their flusher died, or failed
    to insert them (ClickHouse down), and they are to be inserted again."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            f"""SELECT DISTINCT batch_id FROM {SCHEMA}.pending_rows
                 WHERE target = $1 AND batch_id IS NOT NULL
                   AND claimed_at < now() - make_interval(secs => $2)
                 ORDER BY batch_id""",
            target,
            older_than_seconds,
        )
    return [int(row["batch_id"]) for row in rows]


async def read_batch(db: Database, target: str, batch_id: int) -> Batch | None:
    """The batch's rows; None when it is gone (another flusher wrote it meanwhile)."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            f"""SELECT row_count, payload FROM {SCHEMA}.pending_rows
                 WHERE batch_id = $1 ORDER BY id""",
            batch_id,
        )
    if not rows:
        return None
    payload = b"\n".join(bytes(row["payload"]) for row in rows)
    return Batch(batch_id, target, sum(row["row_count"] for row in rows), payload)


async def forget(db: Database, batch_id: int) -> None:
    """Deletes a batch ClickHouse holds now."""
    async with db.connection() as conn:
        await conn.execute(f"DELETE FROM {SCHEMA}.pending_rows WHERE batch_id = $1", batch_id)
