"""Where a consumer's effects go, each applied exactly once although events arrive at least
once: the event id is recorded with the effect, atomically, and an id already recorded is
a duplicate (no effect).

- PostgreSQL effects (`Consumer.on`): the transaction inserts (group, event_id) into
  nova_events.processed_events, ON CONFLICT DO NOTHING, and runs the handler on the same
  connection (for one event, or for a batch's run of them at once: mark_all_processed).
  The record and the effect commit together or not at all, and a concurrent second
  delivery blocks on the key, then sees it.
- Redis effects (`Consumer.on_redis`): the marker `nova:processed:<group>:<event_id>` is
  written by `SET NX EX` inside the same MULTI/EXEC transaction as the commands the handler
  queues, under WATCH of the marker: WATCH, EXISTS (set: duplicate), MULTI, SET NX EX,
  the handler's commands, EXEC. Marker and effect are applied together or not at all; a
  concurrent writer of the marker aborts the EXEC (WatchError) and the retry sees a
  duplicate. What this does not give, and why the PostgreSQL path is preferred:
  * handlers can only queue writes (in MULTI, reads return nothing until EXEC), on keys
    of one Redis node (on a cluster, WATCH/MULTI keys must share a hash slot);
  * Redis does not roll a transaction back when a queued command fails at run time
    (WRONGTYPE): the rest, marker included, stays applied, so the event is dead-lettered
    at once (a retry would see the marker) with an error that says so;
  * the marker expires after `redis_marker_ttl_seconds` (Redis memory), so a delivery
    later than that is not recognised as a duplicate.

The home feed's fan-out and the user cache's invalidation write Redis from PostgreSQL
handlers instead (idempotent writes, the processed record in PostgreSQL): one user's
keys share a Redis Cluster slot, but the marker and the keys would not.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from nova.events.v1 import events_pb2
from services.runtime.events.model import Event

PostgresHandler = Callable[[asyncpg.Connection, Event, events_pb2.EventEnvelope], Awaitable[None]]
"""Applies an event's effect on `conn`, inside the transaction that records the event."""

RedisHandler = Callable[[Pipeline, Event, events_pb2.EventEnvelope], Awaitable[None]]
"""Queues an event's effect as write commands on `pipe`, a MULTI block that also sets the
event's processed marker (do not await the commands: they run at EXEC)."""

_ERROR_TEXT_LIMIT = 2000
_MARK_PROCESSED = """
    INSERT INTO nova_events.processed_events (group_name, event_id) VALUES ($1, $2)
    ON CONFLICT DO NOTHING
    RETURNING true
"""
_MARK_ALL_PROCESSED = """
    INSERT INTO nova_events.processed_events (group_name, event_id)
    SELECT $1, event_id FROM unnest($2::uuid[]) AS e(event_id)
    ON CONFLICT DO NOTHING
    RETURNING event_id
"""


async def mark_processed(conn: asyncpg.Connection, group: str, event_id: uuid.UUID) -> bool:
    """Records that `group` processed the event, in the caller's transaction; False when
    it was recorded before (a duplicate: apply no effect)."""
    return await conn.fetchval(_MARK_PROCESSED, group, event_id) is not None


async def mark_all_processed(
    conn: asyncpg.Connection, group: str, event_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """mark_processed for many events in one statement: the ids recorded now (an id
    recorded before, or twice in `event_ids`, is a duplicate after its first)."""
    rows = await conn.fetch(_MARK_ALL_PROCESSED, group, event_ids)
    return {row["event_id"] for row in rows}


class NotRetryable(Exception):
    """A failure another attempt cannot fix; the event is dead-lettered at once."""


async def apply_in_redis(
    client: Redis,
    marker: str,
    ttl_seconds: int,
    queue_effect: Callable[[Pipeline], Awaitable[None]],
) -> bool:
    """WATCH marker; EXISTS (duplicate if set); MULTI; SET marker NX EX; effect; EXEC.

    A WatchError (someone wrote the marker between WATCH and EXEC, or the connection
    dropped while watching) means nothing was applied: look again."""
    for _ in range(3):
        async with client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(marker)
                if await pipe.exists(marker):
                    return False
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.set(marker, 1, nx=True, ex=ttl_seconds)
                await queue_effect(pipe)
                replies = await pipe.execute(raise_on_error=False)
            except WatchError:
                continue
        failed = [reply for reply in replies if isinstance(reply, Exception)]
        if failed:
            raise NotRetryable(
                f"Redis ran the transaction but {len(failed)} command(s) failed "
                f"({describe(failed[0])}); the rest and the processed marker stay applied "
                "(Redis has no rollback), so the event is not retried"
            )
        return True
    raise WatchError(f"{marker} kept changing during the transaction")


def describe(error: BaseException) -> str:
    """ "KeyError: 'x'": what a dead letter and a log line keep of an error."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text[:_ERROR_TEXT_LIMIT]
