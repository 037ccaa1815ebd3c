"""SQL for the feed: its projections of the follow graph and of posts (written by the
feed's consumer, in the transaction that records each event as processed) and the reads
of the pull path (a missing timeline's first page, pages past the cap, big authors)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.feed.timelines import Item
from services.runtime.db import Database
from services.runtime.pagination import NEWEST_CURSOR

SCHEMA = "feed_service"

PULL_AUTHORS = 1000
"""Followed authors the pull path and a rebuild read at most: the user's most recent
follows (each costs one index descent; the gateway's cost model counts them)."""


def _newest_of(authors: str) -> str:
    """The newest posts older than $3 (limit $4) of the authors `authors` selects (a
    subquery with an author_id column, over tenant $1): one index descent per author
    (posts_author_idx), then a merge of at most the limit each, so it costs the same
    however many posts each author has."""
    return f"""
SELECT p.post_id, p.author_id
  FROM ({authors}) AS a
 CROSS JOIN LATERAL (
       SELECT post_id, author_id FROM feed_service.posts
        WHERE tenant_id = $1 AND author_id = a.author_id AND deleted_at IS NULL
          AND post_id < $3
        ORDER BY post_id DESC
        LIMIT $4) AS p
 ORDER BY p.post_id DESC
 LIMIT $4
"""


_PULL = _newest_of(f"""
    (SELECT followee_id AS author_id FROM feed_service.follows
      WHERE tenant_id = $1 AND follower_id = $2
      ORDER BY followed_at DESC LIMIT {PULL_AUTHORS})
    UNION ALL SELECT $2""")
"""Everyone the user ($2) follows (the most recent PULL_AUTHORS follows) and the user."""

_REBUILD = _newest_of(f"""
    (SELECT f.followee_id AS author_id FROM feed_service.follows f
       JOIN feed_service.members m
         ON m.tenant_id = f.tenant_id AND m.user_id = f.followee_id
      WHERE f.tenant_id = $1 AND f.follower_id = $2 AND NOT m.big
      ORDER BY f.followed_at DESC LIMIT {PULL_AUTHORS})
    UNION ALL SELECT $2""")
"""What the user's stored timeline holds: the pull without the big authors."""

_BY_AUTHORS = _newest_of("SELECT unnest($2::uuid[]) AS author_id")


def _items(rows: Sequence[asyncpg.Record]) -> list[Item]:
    return [Item(row["post_id"], row["author_id"]) for row in rows]


# -- The projections, on the consumer's connection --------------------------------------


async def add_member(conn: asyncpg.Connection, tenant_id: uuid.UUID, user_id: uuid.UUID) -> None:
    await conn.execute(
        """INSERT INTO feed_service.members (tenant_id, user_id) VALUES ($1, $2)
           ON CONFLICT DO NOTHING""",
        tenant_id,
        user_id,
    )


async def add_post(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, post_id: uuid.UUID, author_id: uuid.UUID
) -> bool:
    """False when the post is known already (it may have been deleted since)."""
    await add_member(conn, tenant_id, author_id)
    status: str = await conn.execute(
        """INSERT INTO feed_service.posts (tenant_id, post_id, author_id) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING""",
        tenant_id,
        post_id,
        author_id,
    )
    return status.endswith(" 1")


async def delete_post(conn: asyncpg.Connection, tenant_id: uuid.UUID, post_id: uuid.UUID) -> None:
    await conn.execute(
        """UPDATE feed_service.posts SET deleted_at = coalesce(deleted_at, now())
            WHERE tenant_id = $1 AND post_id = $2""",
        tenant_id,
        post_id,
    )


async def add_follow(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, follower_id: uuid.UUID, followee_id: uuid.UUID
) -> int | None:
    """The followee's follower count after the follow; None if it existed already."""
    await add_member(conn, tenant_id, follower_id)
    await add_member(conn, tenant_id, followee_id)
    inserted = await conn.fetchval(
        """INSERT INTO feed_service.follows (tenant_id, follower_id, followee_id)
           VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true""",
        tenant_id,
        follower_id,
        followee_id,
    )
    if inserted is None:
        return None
    return await _count_followers(conn, tenant_id, followee_id, +1)


async def remove_follow(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, follower_id: uuid.UUID, followee_id: uuid.UUID
) -> int | None:
    """The followee's follower count after the unfollow; None if there was no follow."""
    deleted = await conn.fetchval(
        """DELETE FROM feed_service.follows
            WHERE tenant_id = $1 AND follower_id = $2 AND followee_id = $3 RETURNING true""",
        tenant_id,
        follower_id,
        followee_id,
    )
    if deleted is None:
        return None
    return await _count_followers(conn, tenant_id, followee_id, -1)


async def _count_followers(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, user_id: uuid.UUID, change: int
) -> int:
    count: int = await conn.fetchval(
        """UPDATE feed_service.members SET followers = greatest(followers + $3, 0)
            WHERE tenant_id = $1 AND user_id = $2 RETURNING followers""",
        tenant_id,
        user_id,
        change,
    )
    return count


async def settle_big(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, user_id: uuid.UUID, threshold: int
) -> tuple[bool, bool]:
    """(big before, big now) of a user whose follower count just changed: big above
    `threshold` followers, no longer big below 90% of it."""
    row = await conn.fetchrow(
        """UPDATE feed_service.members m
              SET big = CASE WHEN m.big THEN m.followers * 10 >= $3 * 9
                             ELSE m.followers > $3 END
             FROM feed_service.members old
            WHERE m.tenant_id = $1 AND m.user_id = $2
              AND old.tenant_id = m.tenant_id AND old.user_id = m.user_id
        RETURNING old.big AS was, m.big AS now""",
        tenant_id,
        user_id,
        threshold,
    )
    return (bool(row["was"]), bool(row["now"])) if row is not None else (False, False)


async def is_big(conn: asyncpg.Connection, tenant_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    big: bool | None = await conn.fetchval(
        "SELECT big FROM feed_service.members WHERE tenant_id = $1 AND user_id = $2",
        tenant_id,
        user_id,
    )
    return bool(big)


async def followers(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    author_id: uuid.UUID,
    active_since: datetime | None = None,
) -> list[uuid.UUID]:
    """The author's followers (only those who read their feed since `active_since`)."""
    rows = await conn.fetch(
        """SELECT f.follower_id FROM feed_service.follows f
             JOIN feed_service.members m
               ON m.tenant_id = f.tenant_id AND m.user_id = f.follower_id
            WHERE f.tenant_id = $1 AND f.followee_id = $2
              AND ($3::timestamptz IS NULL OR m.last_active_at >= $3)""",
        tenant_id,
        author_id,
        active_since,
    )
    return [row["follower_id"] for row in rows]


async def recent_posts(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, author_id: uuid.UUID, limit: int
) -> list[Item]:
    rows = await conn.fetch(
        """SELECT post_id, author_id FROM feed_service.posts
            WHERE tenant_id = $1 AND author_id = $2 AND deleted_at IS NULL
            ORDER BY post_id DESC LIMIT $3""",
        tenant_id,
        author_id,
        limit,
    )
    return _items(rows)


# -- The pull path ----------------------------------------------------------------------


class FeedRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def pull(
        self, tenant_id: uuid.UUID, user_id: uuid.UUID, before: uuid.UUID, limit: int
    ) -> list[Item]:
        """The newest posts older than `before` of everyone the user follows, and the
        user's own: what the timeline would hold, straight from the projections."""
        async with self.db.connection() as conn:
            return _items(await conn.fetch(_PULL, tenant_id, user_id, before, limit))

    async def by_authors(
        self, tenant_id: uuid.UUID, authors: Sequence[uuid.UUID], before: uuid.UUID, limit: int
    ) -> list[Item]:
        """The newest posts older than `before` of these authors (the big ones a reader
        follows, merged at read time)."""
        if not authors:
            return []
        async with self.db.connection() as conn:
            return _items(await conn.fetch(_BY_AUTHORS, tenant_id, list(authors), before, limit))

    async def big_followees(self, tenant_id: uuid.UUID, user_id: uuid.UUID) -> list[uuid.UUID]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                """SELECT f.followee_id FROM feed_service.follows f
                     JOIN feed_service.members m
                       ON m.tenant_id = f.tenant_id AND m.user_id = f.followee_id
                    WHERE f.tenant_id = $1 AND f.follower_id = $2 AND m.big""",
                tenant_id,
                user_id,
            )
        return [row["followee_id"] for row in rows]

    async def fanned_out(self, tenant_id: uuid.UUID, user_id: uuid.UUID, limit: int) -> list[Item]:
        """What a rebuilt timeline holds: the newest posts of the followed authors that are
        fanned out (not big) and the user's own."""
        async with self.db.connection() as conn:
            return _items(await conn.fetch(_REBUILD, tenant_id, user_id, NEWEST_CURSOR, limit))

    async def touch(self, tenant_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """Records that the user read their feed (fan-out reaches the active only)."""
        async with self.db.connection() as conn:
            await conn.execute(
                """INSERT INTO feed_service.members (tenant_id, user_id) VALUES ($1, $2)
                   ON CONFLICT (tenant_id, user_id) DO UPDATE SET last_active_at = now()""",
                tenant_id,
                user_id,
            )
