"""Dead letters: events a consumer group gave up on, kept until someone replays or discards
them (`nova events dlq`, `nova events dlq replay|discard`).

A replay is the failed group's alone: `request_replay` marks the letters, and that group's
own consumer applies each again (with its retries) in the transaction that marks it
replayed, then releases the events of its aggregate it parked meanwhile (parking.py). No
other group sees the event again, and it cannot be applied twice: the group never recorded
it as processed (its effect rolled back with each failed attempt), and marking the letter
replayed commits with the effect. An event that fails again stays on its letter, with the
new error and attempts. Discarding gives up on the event: its aggregate's parked events
flow on without it.

A record that was not an event (`undecodable` says why; `envelope` holds its raw bytes)
cannot be replayed: replaying it by id is refused with InvalidArgument, and replaying a
whole group leaves it listed. It is there to be looked at, and to fix its producer; it
may be discarded.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from services.runtime.db import Database
from services.runtime.errors import InvalidArgument, NotFound
from services.runtime.events.model import Delivery, Event, UndecodableRecord

_COLUMNS = """d.id, d.group_name, d.event_id, d.event_type, d.topic, d.partition, d.position,
              d.undecodable, d.envelope, d.error, d.attempts, d.failed_at, d.replayed_at,
              d.aggregate_id, d.replay_requested_at, d.discarded_at"""
_OPEN = "d.replayed_at IS NULL AND d.discarded_at IS NULL"
_PARKED_BEHIND = """(SELECT count(*) FROM nova_events.parked p
                      WHERE p.group_name = d.group_name AND p.topic = d.topic
                        AND p.aggregate_id = d.aggregate_id) AS parked"""


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
    aggregate_id: str | None = None
    """The aggregate it holds back (None for undecodable records and old entries)."""
    replay_requested_at: datetime | None = None
    """Set by `request_replay` until the group's consumer has tried it."""
    discarded_at: datetime | None = None
    parked: int = 0
    """Later events of its aggregate the group holds back behind it."""

    @property
    def is_open(self) -> bool:
        return self.replayed_at is None and self.discarded_at is None

    @property
    def event(self) -> Event:
        """The event to apply again; raises UndecodableRecord for an undecodable letter."""
        if self.undecodable is not None:
            raise UndecodableRecord(self.undecodable)
        return Event.from_envelope(self.envelope)

    @property
    def delivery(self) -> Delivery:
        """The event as its consumer receives it, at its old place in the log."""
        return Delivery(self.event, self.topic, self.partition or 0, self.position or 0)


async def record_dead_letter(
    conn: asyncpg.Connection, *, group: str, delivery: Delivery, error: str, attempts: int
) -> int:
    """Stores a failed event for `group` and returns its id. An event already waiting
    (open) for the group keeps its entry, with the new error and attempts added, and any
    replay request on it answered (it failed again)."""
    event = delivery.event
    dead_letter_id: int = await conn.fetchval(
        """INSERT INTO nova_events.dead_letters
               (group_name, event_id, event_type, topic, envelope, error, attempts,
                partition, position, undecodable, aggregate_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           ON CONFLICT (group_name, event_id) WHERE replayed_at IS NULL AND discarded_at IS NULL
           DO UPDATE SET error = EXCLUDED.error,
                         attempts = dead_letters.attempts + EXCLUDED.attempts,
                         failed_at = now(),
                         replay_requested_at = NULL
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
        None if delivery.undecodable is not None else event.aggregate_id,
    )
    return dead_letter_id


async def list_dead_letters(
    db: Database, group: str | None = None, include_replayed: bool = False, limit: int = 50
) -> list[DeadLetter]:
    """The newest dead letters first, of one group or all; by default only the open ones
    (neither replayed nor discarded)."""
    if limit < 1:
        raise InvalidArgument(f"limit must be at least 1, got {limit}")
    async with db.connection() as conn:
        rows = await conn.fetch(
            f"""SELECT {_COLUMNS}, {_PARKED_BEHIND} FROM nova_events.dead_letters d
                 WHERE ($1::text IS NULL OR d.group_name = $1)
                   AND ($2 OR ({_OPEN}))
                 ORDER BY d.id DESC
                 LIMIT $3""",
            group,
            include_replayed,
            limit,
        )
    return [_dead_letter(row) for row in rows]


async def request_replay(
    db: Database, ids: Sequence[int] | None = None, *, group: str | None = None
) -> list[DeadLetter]:
    """Asks the failed group's consumer to apply the dead letters `ids`, or every open one
    of `group`, again (in the order they failed); returns them. Raises NotFound for ids
    that do not exist and InvalidArgument for letters that are closed or not events,
    before asking for any."""
    _one_of(ids, group)
    async with db.transaction() as conn:
        if ids is not None:
            rows = await _named(conn, ids)
            _refuse(rows, "replayed")
            undecodable = [
                f"{row['id']} ({row['undecodable']})" for row in rows if row["undecodable"]
            ]
            if undecodable:
                raise InvalidArgument(
                    f"dead letter {', '.join(undecodable)} is not an event and cannot be "
                    "replayed; fix the producer that wrote it (its raw bytes are kept), then "
                    "`nova events dlq discard` it"
                )
        else:
            rows = await conn.fetch(
                f"""SELECT {_COLUMNS}, 0 AS parked FROM nova_events.dead_letters d
                     WHERE d.group_name = $1 AND {_OPEN} AND d.undecodable IS NULL
                     ORDER BY d.id FOR UPDATE""",
                group,
            )
        await conn.execute(
            "UPDATE nova_events.dead_letters SET replay_requested_at = now() WHERE id = ANY($1)",
            [row["id"] for row in rows],
        )
    return [_dead_letter(row) for row in rows]


async def discard_dead_letters(
    db: Database, ids: Sequence[int] | None = None, *, group: str | None = None
) -> list[DeadLetter]:
    """Gives up on the dead letters `ids`, or every open one of `group`: their events are
    never applied, and the events parked behind them flow on. Returns them, with how
    many events each released."""
    _one_of(ids, group)
    async with db.transaction() as conn:
        if ids is not None:
            rows = await _named(conn, ids)
            _refuse(rows, "discarded")
        else:
            rows = await conn.fetch(
                f"""SELECT {_COLUMNS}, 0 AS parked FROM nova_events.dead_letters d
                     WHERE d.group_name = $1 AND {_OPEN} ORDER BY d.id FOR UPDATE""",
                group,
            )
        marked = await conn.fetch(
            f"""UPDATE nova_events.dead_letters d SET discarded_at = now()
                 WHERE d.id = ANY($1)
             RETURNING {_COLUMNS}, {_PARKED_BEHIND}""",
            [row["id"] for row in rows],
        )
    return sorted((_dead_letter(row) for row in marked), key=lambda letter: letter.id)


async def wait_for_replays(
    db: Database, ids: Sequence[int], timeout_seconds: float, poll_seconds: float = 0.2
) -> list[DeadLetter]:
    """The letters `ids` once the consumer has tried each requested replay (replayed, or
    open again with the new error), or as they are when `timeout_seconds` have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    while True:
        async with db.connection() as conn:
            rows = await conn.fetch(
                f"""SELECT {_COLUMNS}, {_PARKED_BEHIND} FROM nova_events.dead_letters d
                     WHERE d.id = ANY($1::bigint[]) ORDER BY d.id""",
                list(ids),
            )
        letters = [_dead_letter(row) for row in rows]
        pending = any(letter.is_open and letter.replay_requested_at for letter in letters)
        if not pending or loop.time() >= deadline:
            return letters
        await asyncio.sleep(poll_seconds)


async def requested_replays(conn: asyncpg.Connection, group: str, limit: int) -> list[DeadLetter]:
    """The group's open letters whose replay was asked for, oldest first."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS}, 0 AS parked FROM nova_events.dead_letters d
             WHERE d.group_name = $1 AND {_OPEN} AND d.replay_requested_at IS NOT NULL
             ORDER BY d.id LIMIT $2""",
        group,
        limit,
    )
    return [_dead_letter(row) for row in rows]


async def mark_replayed(conn: asyncpg.Connection, dead_letter_id: int) -> None:
    """In the transaction of the replayed event's effect."""
    await conn.execute(
        """UPDATE nova_events.dead_letters
              SET replayed_at = coalesce(replayed_at, now()), replay_requested_at = NULL
            WHERE id = $1""",
        dead_letter_id,
    )


def _one_of(ids: Sequence[int] | None, group: str | None) -> None:
    if (ids is None) == (group is None):
        raise InvalidArgument("name the dead letters: ids, or a group for all of its")


async def _named(conn: asyncpg.Connection, ids: Sequence[int]) -> list[asyncpg.Record]:
    """The letters `ids`, locked; NotFound for any that does not exist."""
    wanted = sorted(set(ids))
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT {_COLUMNS}, 0 AS parked FROM nova_events.dead_letters d
             WHERE d.id = ANY($1::bigint[]) ORDER BY d.id FOR UPDATE""",
        wanted,
    )
    found = {row["id"] for row in rows}
    missing = [str(i) for i in wanted if i not in found]
    if missing:
        raise NotFound(f"no dead letter with id {', '.join(missing)}; `nova events dlq` lists them")
    return rows


def _refuse(rows: Sequence[asyncpg.Record], doing: str) -> None:
    """InvalidArgument for letters that are closed already."""
    closed = [
        f"{row['id']} (replayed at {row['replayed_at']})"
        if row["replayed_at"]
        else f"{row['id']} (discarded at {row['discarded_at']})"
        for row in rows
        if row["replayed_at"] or row["discarded_at"]
    ]
    if closed:
        raise InvalidArgument(
            f"dead letter {', '.join(closed)} is closed and cannot be {doing}; "
            "a new failure has a new id (`nova events dlq` lists the open ones)"
        )


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
        aggregate_id=row["aggregate_id"],
        replay_requested_at=row["replay_requested_at"],
        discarded_at=row["discarded_at"],
        parked=row["parked"],
    )
