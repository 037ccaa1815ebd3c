"""Each consumer group's state, as `nova events status` shows it: its position, lag and
members from the transport, and from PostgreSQL what it holds aside: the dead letters
still open (neither replayed nor discarded) and the events parked behind them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.runtime.db import Database
from services.runtime.events.model import GroupLag, Transport

_COUNTS = """
SELECT g.name,
       (SELECT count(*) FROM nova_events.dead_letters d
         WHERE d.group_name = g.name AND d.replayed_at IS NULL AND d.discarded_at IS NULL)
           AS open_dead_letters,
       (SELECT count(*) FROM nova_events.parked p WHERE p.group_name = g.name) AS parked
FROM unnest($1::text[]) AS g(name)
"""


@dataclass(frozen=True, slots=True)
class GroupStatus:
    lag: GroupLag
    open_dead_letters: int
    parked: int
    """Events held back behind an open dead letter of their aggregate."""


async def group_statuses(
    transport: Transport, db: Database, known: Mapping[str, Sequence[str]]
) -> list[GroupStatus]:
    """The groups of `known` (name -> the topics it consumes), and every other group the
    transport has positions for, by name."""
    names = sorted(set(known) | set(await transport.groups()))
    lags = [await transport.lag(name, known.get(name, ())) for name in names]
    async with db.connection() as conn:
        counts = {row["name"]: row for row in await conn.fetch(_COUNTS, names)}
    return [
        GroupStatus(
            lag=lag,
            open_dead_letters=counts[lag.group]["open_dead_letters"],
            parked=counts[lag.group]["parked"],
        )
        for lag in lags
    ]
