"""Dead letters: events a consumer group gave up on, kept until someone replays them
(`nova events dlq`, `nova events dlq replay`).

Replaying republishes the stored envelope through the transport, so every group receives
the event again: the groups that processed it find it in processed_events and drop it as a
duplicate, while the group that failed never recorded it (its effect rolled back with each
failed attempt) and processes it now, with the handler fixed. The entry is then marked
replayed_at; an event that fails again gets a new entry.

A record that was not an event (`undecodable` says why; `envelope` holds its raw bytes)
cannot be replayed: replaying it by id is refused with InvalidArgument, and replaying a
whole group leaves it listed. It is there to be looked at, and to fix its producer.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from services.runtime.db import Database
from services.runtime.errors import InvalidArgument, NotFound
from services.runtime.events.model import Delivery, Event, Publisher, UndecodableRecord

_COLUMNS = """id, group_name, event_id, event_type, topic, partition, position, undecodable,
              envelope, error, attempts, failed_at, replayed_at"""


@dataclass(frozen=True)
class DeadLetter:
    id: int
    group: str
    event_id: uuid.UUID
    event_type: str
    topic: str
    error: str
    """The last attempt's error: "ValueError: no such post"."""
    attempts: int
    """Handler runs before the consumer gave up (summed when the event failed again
    before being replayed)."""
    failed_at: datetime
    replayed_at: datetime | None
    envelope: bytes = field(repr=False)
    """The stored envelope, or an undecodable record's raw bytes (empty for a tombstone)."""
    partition: int | None = None
    position: int | None = None
    """Where it was in the log (None for entries older than migration 0003)."""
    undecodable: str | None = None
    """Why the record was not an event; such a letter cannot be replayed."""

    @property
    def event(self) -> Event:
        """The event to republish; raises UndecodableRecord for an undecodable letter."""
        if self.undecodable is not None:
            raise UndecodableRecord(self.undecodable)
        return Event.from_envelope(self.envelope)


async def record_dead_letter(
    conn: asyncpg.Connection, *, group: str, delivery: Delivery, error: str, attempts: int
) -> int:
    """Stores a failed event for `group` and returns its id. An event already waiting
    (unreplayed) for the group keeps its entry, with the new error and attempts added."""
    event = delivery.event
    dead_letter_id: int = await conn.fetchval(
        """INSERT INTO nova_events.dead_letters
               (group_name, event_id, event_type, topic, envelope, error, attempts,
                partition, position, undecodable)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           ON CONFLICT (group_name, event_id) WHERE replayed_at IS NULL
           DO UPDATE SET error = EXCLUDED.error,
                         attempts = dead_letters.attempts + EXCLUDED.attempts,
                         partition = EXCLUDED.partition,
                         position = EXCLUDED.position,
                         failed_at = now()
           RETURNING id""",
        group,
        event.event_id,
        event.event_type,
        delivery.topic,
        event.envelope,
        error,
        attempts,
        delivery.partition,
        delivery.offset,
        delivery.undecodable,
    )
    return dead_letter_id


async def list_dead_letters(
    db: Database, group: str | None = None, include_replayed: bool = False, limit: int = 50
) -> list[DeadLetter]:
    """The newest dead letters first, of one group or all; by default only those still
    waiting for a replay."""
    if limit < 1:
        raise InvalidArgument(f"limit must be at least 1, got {limit}")
    async with db.connection() as conn:
        rows = await conn.fetch(
            f"""SELECT {_COLUMNS} FROM nova_events.dead_letters
                 WHERE ($1::text IS NULL OR group_name = $1)
                   AND ($2 OR replayed_at IS NULL)
                 ORDER BY id DESC
                 LIMIT $3""",
            group,
            include_replayed,
            limit,
        )
    return [_dead_letter(row) for row in rows]


async def replay_dead_letters(
    db: Database,
    publisher: Publisher,
    ids: Sequence[int] | None = None,
    *,
    group: str | None = None,
) -> list[DeadLetter]:
    """Republishes the dead letters `ids`, or every unreplayed one of `group`, in the order
    they failed, and marks them replayed; returns them as they were before. Raises NotFound
    for ids that do not exist and InvalidArgument for ids already replayed, before
    publishing anything."""
    if (ids is None) == (group is None):
        raise InvalidArgument("name the dead letters to replay: ids, or a group for all of its")
    async with db.transaction() as conn:
        if ids is not None:
            wanted = sorted(set(ids))
            rows = await conn.fetch(
                f"""SELECT {_COLUMNS} FROM nova_events.dead_letters
                     WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE""",
                wanted,
            )
            found = {row["id"] for row in rows}
            missing = [str(i) for i in wanted if i not in found]
            if missing:
                raise NotFound(
                    f"no dead letter with id {', '.join(missing)}; `nova events dlq` lists them"
                )
            replayed = [
                f"{row['id']} (at {row['replayed_at']})" for row in rows if row["replayed_at"]
            ]
            if replayed:
                raise InvalidArgument(
                    f"dead letter {', '.join(replayed)} was already replayed; its event was "
                    "delivered again then (a new failure has a new id)"
                )
            undecodable = [
                f"{row['id']} ({row['undecodable']})" for row in rows if row["undecodable"]
            ]
            if undecodable:
                raise InvalidArgument(
                    f"dead letter {', '.join(undecodable)} is not an event and cannot be "
                    "replayed; fix the producer that wrote it (its raw bytes are kept)"
                )
        else:
            rows = await conn.fetch(
                f"""SELECT {_COLUMNS} FROM nova_events.dead_letters
                     WHERE group_name = $1 AND replayed_at IS NULL AND undecodable IS NULL
                     ORDER BY id FOR UPDATE""",
                group,
            )
        letters = [_dead_letter(row) for row in rows]
        if letters:
            await publisher.publish([letter.event for letter in letters])
            await conn.execute(
                "UPDATE nova_events.dead_letters SET replayed_at = now() WHERE id = ANY($1)",
                [letter.id for letter in letters],
            )
    return letters


def _dead_letter(row: asyncpg.Record) -> DeadLetter:
    return DeadLetter(
        id=row["id"],
        group=row["group_name"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        topic=row["topic"],
        error=row["error"],
        attempts=row["attempts"],
        failed_at=row["failed_at"],
        replayed_at=row["replayed_at"],
        envelope=row["envelope"],
        partition=row["partition"],
        position=row["position"],
        undecodable=row["undecodable"],
    )
