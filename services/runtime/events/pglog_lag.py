"""Consumer lag on the PostgreSQL log, read from the groups' offsets rows and the log; and
a group's members, from the advisory lock its active member holds and its standbys wait
for (pglog.py), as pg_locks shows them.

Counting a backlog is an index-only scan of (topic, seq) from the group's position, so
it costs in proportion to the backlog; the metrics sampler runs it every 10 s per group.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.runtime.db import Database
from services.runtime.events.model import GroupLag, TopicLag

_LAG = """
SELECT t.topic, o.seq,
       (SELECT count(*) FROM nova_events.log l
         WHERE l.topic = t.topic AND l.seq > coalesce(o.seq, 0)) AS events,
       (SELECT greatest(0, extract(epoch FROM clock_timestamp() - l.published_at))::float8
          FROM nova_events.log l
         WHERE l.topic = t.topic AND l.seq > coalesce(o.seq, 0)
         ORDER BY l.seq LIMIT 1) AS seconds
FROM (SELECT unnest($2::text[])
      UNION
      SELECT topic FROM nova_events.offsets WHERE group_name = $1) AS t(topic)
LEFT JOIN nova_events.offsets o ON o.group_name = $1 AND o.topic = t.topic
ORDER BY t.topic
"""

# A bigint advisory lock key shows as its high half in classid, its low half in objid,
# with objsubid 1 (the two-int4 form has objsubid 2).
_MEMBERS = """
SELECT count(*) FILTER (WHERE granted) AS active,
       count(*) FILTER (WHERE NOT granted) AS waiting
FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 1
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND classid = $1::bigint::oid AND objid = $2::bigint::oid
"""

_GROUPS = "SELECT DISTINCT group_name FROM nova_events.offsets ORDER BY group_name"


async def postgres_lag(db: Database, group: str, topics: Sequence[str], lock_key: int) -> GroupLag:
    """`group`'s lag on `topics` and on the topics it has rows for; `lock_key` is the
    group's advisory lock key (pglog._group_lock)."""
    unsigned = lock_key & 0xFFFF_FFFF_FFFF_FFFF
    async with db.connection() as conn:
        rows = await conn.fetch(_LAG, group, sorted(set(topics)))
        members = await conn.fetchrow(_MEMBERS, unsigned >> 32, unsigned & 0xFFFF_FFFF)
    assert members is not None  # an aggregate without GROUP BY returns one row
    return GroupLag(
        group=group,
        topics=tuple(
            TopicLag(
                topic=row["topic"],
                positions={0: row["seq"]},
                events=row["events"],
                seconds=row["seconds"] or 0.0,
            )
            for row in rows
        ),
        members=members["active"],
        standby=members["waiting"],
    )


async def group_names(db: Database) -> list[str]:
    """Every group with offsets rows: each that ever subscribed or was rewound."""
    async with db.connection() as conn:
        return [row["group_name"] for row in await conn.fetch(_GROUPS)]
