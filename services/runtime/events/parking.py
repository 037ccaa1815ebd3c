"""Order after a dead letter: a group holds back an aggregate whose event it dead-lettered.

Events of one aggregate are delivered in order, and handlers rely on it (Unfollowed undoes
a Followed). If the consumer moved past a dead-lettered Followed and applied the Unfollowed
after it, a later replay of the Followed would leave a follow that was undone. So while a
group has an open dead letter for an aggregate (topic and aggregate id), that group parks
the aggregate's later events in nova_events.parked, in delivery order, instead of applying
them; other aggregates flow on. The aggregate is released when the letter is replayed or
discarded (`nova events dlq replay|discard`): the group's own consumer applies the parked
events in order, deleting each with its effect, until none is left or one fails and is
dead-lettered in turn (which holds the aggregate again).

An aggregate is held while it has an open letter *or* parked events, so an event parked
while a release drains the rest is still applied after them: a later maintenance pass
releases what is left. Every step here runs on the caller's connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from services.runtime.events.model import Delivery, Event

Aggregate = tuple[str, str]
"""(topic, aggregate id): what a dead letter holds back."""

_HELD = """
SELECT DISTINCT b.topic, b.key
  FROM unnest($2::text[], $3::text[]) AS b(topic, key)
 WHERE (SELECT EXISTS (SELECT 1 FROM nova_events.dead_letters
                        WHERE group_name = $1 AND aggregate_id IS NOT NULL
                          AND replayed_at IS NULL AND discarded_at IS NULL)
            OR EXISTS (SELECT 1 FROM nova_events.parked WHERE group_name = $1))
   AND (EXISTS (SELECT 1 FROM nova_events.dead_letters d
                 WHERE d.group_name = $1 AND d.topic = b.topic AND d.aggregate_id = b.key
                   AND d.replayed_at IS NULL AND d.discarded_at IS NULL)
        OR EXISTS (SELECT 1 FROM nova_events.parked p
                    WHERE p.group_name = $1 AND p.topic = b.topic AND p.aggregate_id = b.key))
"""
# The uncorrelated first condition is evaluated once (an InitPlan): a group that holds
# nothing back, the usual case, pays two index probes per batch, not two per event.

_PARK = """
INSERT INTO nova_events.parked
       (group_name, topic, aggregate_id, event_id, event_type, partition, position, envelope)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (group_name, event_id) DO NOTHING
"""

_RELEASABLE = """
SELECT DISTINCT p.topic, p.aggregate_id FROM nova_events.parked p
 WHERE p.group_name = $1
   AND NOT EXISTS (SELECT 1 FROM nova_events.dead_letters d
                    WHERE d.group_name = $1 AND d.topic = p.topic
                      AND d.aggregate_id = p.aggregate_id
                      AND d.replayed_at IS NULL AND d.discarded_at IS NULL)
 LIMIT $2
"""

_NEXT = """
SELECT id, topic, partition, position, envelope FROM nova_events.parked p
 WHERE p.group_name = $1 AND p.topic = $2 AND p.aggregate_id = $3
   AND NOT EXISTS (SELECT 1 FROM nova_events.dead_letters d
                    WHERE d.group_name = $1 AND d.topic = $2 AND d.aggregate_id = $3
                      AND d.replayed_at IS NULL AND d.discarded_at IS NULL)
 ORDER BY id
 LIMIT 1
"""


@dataclass(frozen=True)
class Parked:
    """A parked event, ready to apply."""

    id: int
    delivery: Delivery


def aggregate_of(event: Event, topic: str) -> Aggregate:
    return (topic, event.aggregate_id)


async def held(
    conn: asyncpg.Connection, group: str, deliveries: Iterable[Delivery]
) -> set[Aggregate]:
    """The aggregates among `deliveries` that `group` holds back."""
    wanted = {aggregate_of(d.event, d.topic) for d in deliveries if d.undecodable is None}
    if not wanted:
        return set()
    topics, keys = zip(*wanted, strict=True)
    rows = await conn.fetch(_HELD, group, list(topics), list(keys))
    return {(row["topic"], row["key"]) for row in rows}


async def park(conn: asyncpg.Connection, group: str, delivery: Delivery) -> None:
    """Holds `delivery` back until its aggregate is released (once, however often it is
    delivered)."""
    event = delivery.event
    await conn.execute(
        _PARK,
        group,
        delivery.topic,
        event.aggregate_id,
        event.event_id,
        event.event_type,
        delivery.partition,
        delivery.offset,
        event.envelope,
    )


async def releasable(conn: asyncpg.Connection, group: str, limit: int = 100) -> list[Aggregate]:
    """Aggregates with parked events and no open dead letter: ready to be applied."""
    rows = await conn.fetch(_RELEASABLE, group, limit)
    return [(row["topic"], row["aggregate_id"]) for row in rows]


async def next_parked(conn: asyncpg.Connection, group: str, aggregate: Aggregate) -> Parked | None:
    """The aggregate's first parked event, or None when none is left or a dead letter
    holds it again."""
    row = await conn.fetchrow(_NEXT, group, aggregate[0], aggregate[1])
    if row is None:
        return None
    delivery = Delivery(
        Event.from_envelope(row["envelope"]), row["topic"], row["partition"], row["position"]
    )
    return Parked(row["id"], delivery)


async def unpark(conn: asyncpg.Connection, parked_id: int) -> None:
    await conn.execute("DELETE FROM nova_events.parked WHERE id = $1", parked_id)


async def count_parked(conn: asyncpg.Connection, group: str, aggregate: Aggregate) -> int:
    count: int = await conn.fetchval(
        """SELECT count(*) FROM nova_events.parked
            WHERE group_name = $1 AND topic = $2 AND aggregate_id = $3""",
        group,
        aggregate[0],
        aggregate[1],
    )
    return count
