"""SQL for the content service; every method is one transaction and returns plain dataclasses.

The statements on the read (feed) path are module constants, so tests can EXPLAIN the
exact text the service runs.

Every change also writes its domain event (built in services.content.events) to
content_service.outbox in the same transaction (services.runtime.events.outbox), so an
event exists exactly when its change committed; a call that changes nothing (a repeated
like) writes none.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime

from services.content import events
from services.runtime.db import Database
from services.runtime.errors import NotFound, PermissionDenied
from services.runtime.events import outbox
from services.runtime.ids import new_id
from services.runtime.pagination import NEWEST_CURSOR


@dataclass(frozen=True)
class PostRecord:
    id: uuid.UUID
    author_id: uuid.UUID
    text: str
    created_at: datetime


@dataclass(frozen=True)
class CommentRecord:
    id: uuid.UUID
    post_id: uuid.UUID
    author_id: uuid.UUID
    text: str
    created_at: datetime


@dataclass(frozen=True)
class PostStatsRecord:
    post_id: uuid.UUID
    like_count: int
    comment_count: int
    viewer_has_liked: bool


SCHEMA = "content_service"
"""The service's schema, where its outbox is (services/content/service.py declares it)."""

_POST_COLUMNS = "id, author_id, text, created_at"

# $1 tenant, $2 post ids. Order and duplicates are the caller's business.
BATCH_GET_POSTS_SQL = f"""
    SELECT {_POST_COLUMNS}
    FROM content_service.posts
    WHERE tenant_id = $1 AND id = ANY($2::uuid[])
"""

# $1 tenant, $2 author, $3 cursor (older than this id), $4 limit.
LIST_USER_POSTS_SQL = f"""
    SELECT {_POST_COLUMNS}
    FROM content_service.posts
    WHERE tenant_id = $1 AND author_id = $2 AND id < $3
    ORDER BY id DESC
    LIMIT $4
"""

# $1 tenant, $2 author ids (distinct), $3 cursor (older than this id), $4 limit. Reading
# each author's newest $4 posts would read authors x $4 rows (101,000 for 1,000 authors)
# to keep $4. Instead, `leaders` reads each author's newest post id only (one index entry
# per author) and keeps the $4 authors whose newest posts are newest: only they can be on
# the page, since any other author's newest post has $4 newer ones above it. The leader
# ranked k can give at most $4 - k + 1 posts: each of its posts is older than its own
# newer posts and than the k - 1 newer leaders' newest. So at most $4 ($4 + 1) / 2 posts
# are read (5,151 for a page of 100 and its extra row), whatever the authors' history.
LIST_POSTS_BY_AUTHORS_SQL = f"""
    WITH leaders AS (
        SELECT a.author_id, row_number() OVER (ORDER BY newest.id DESC) AS rank
        FROM unnest($2::uuid[]) AS a(author_id)
        CROSS JOIN LATERAL (
            SELECT id
            FROM content_service.posts
            WHERE tenant_id = $1 AND author_id = a.author_id AND id < $3
            ORDER BY id DESC
            LIMIT 1
        ) newest
        ORDER BY newest.id DESC
        LIMIT $4
    )
    SELECT p.id, p.author_id, p.text, p.created_at
    FROM leaders l
    CROSS JOIN LATERAL (
        SELECT {_POST_COLUMNS}
        FROM content_service.posts
        WHERE tenant_id = $1 AND author_id = l.author_id AND id < $3
        ORDER BY id DESC
        LIMIT $4 - l.rank + 1
    ) p
    ORDER BY p.id DESC
    LIMIT $4
"""


def _latest_comments_of_posts(limit: str, *, joined: str = "") -> str:
    """The posts $2 of tenant $1, each joined to its `limit` newest comments (or to one
    row of NULLs), newest first within each post; `joined` joins more to each post."""
    return f"""
    FROM content_service.posts p {joined}
    LEFT JOIN LATERAL (
        SELECT id, author_id, text, created_at
        FROM content_service.comments
        WHERE tenant_id = p.tenant_id AND post_id = p.id
        ORDER BY id DESC
        LIMIT {limit}
    ) c ON true
    WHERE p.tenant_id = $1 AND p.id = ANY($2::uuid[])
    ORDER BY p.id, c.id DESC
"""


# $1 tenant, $2 post ids, $3 comments per post. One row per comment, newest first within
# each post, and one row with NULL comment columns for an existing post without comments,
# so the caller can tell "no comments" from "no such post".
BATCH_LIST_COMMENTS_SQL = "SELECT p.id AS post_id, c.id, c.author_id, c.text, c.created_at" + (
    _latest_comments_of_posts("$3")
)

# $1 tenant, $2 post ids, $3 viewer (NULL when anonymous, which then matches no like).
BATCH_GET_POST_STATS_SQL = """
    SELECT p.id AS post_id, p.like_count, p.comment_count,
           l.user_id IS NOT NULL AS viewer_has_liked
    FROM content_service.posts p
    LEFT JOIN content_service.likes l
           ON l.tenant_id = p.tenant_id AND l.post_id = p.id AND l.user_id = $3
    WHERE p.tenant_id = $1 AND p.id = ANY($2::uuid[])
"""

# $1 tenant, $2 post ids, $3 viewer, $4 comments per post: both of the above in one
# statement, each post's stats on every row of its comments (or on one row without).
BATCH_STATS_AND_COMMENTS_SQL = """
    SELECT p.id AS post_id, p.like_count, p.comment_count,
           l.user_id IS NOT NULL AS viewer_has_liked,
           c.id, c.author_id, c.text, c.created_at""" + _latest_comments_of_posts(
    "$4",
    # At most one like per post and viewer (the primary key): no row is repeated.
    joined="""LEFT JOIN content_service.likes l
           ON l.tenant_id = p.tenant_id AND l.post_id = p.id AND l.user_id = $3""",
)

_POST_EXISTS = "SELECT true FROM content_service.posts WHERE tenant_id = $1 AND id = $2"

_ADD_LIKES = """UPDATE content_service.posts SET like_count = like_count + $3
                WHERE tenant_id = $1 AND id = $2"""


def _no_post(post_id: uuid.UUID) -> NotFound:
    return NotFound(f"no post with id {post_id}")


class ContentRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_post(
        self, *, tenant_id: uuid.UUID, author_id: uuid.UUID, text: str
    ) -> PostRecord:
        async with self._db.transaction() as conn:
            row = await conn.fetchrow(
                f"""INSERT INTO content_service.posts (tenant_id, id, author_id, text)
                    VALUES ($1, $2, $3, $4)
                    RETURNING {_POST_COLUMNS}""",
                tenant_id,
                new_id(),
                author_id,
                text,
            )
            assert row is not None
            post = PostRecord(**row)
            await outbox.append(
                conn, SCHEMA, [events.post_created(tenant_id, post.id, post.author_id)]
            )
        return post

    async def get_post(self, *, tenant_id: uuid.UUID, post_id: uuid.UUID) -> PostRecord:
        found = await self.get_posts(tenant_id=tenant_id, post_ids=[post_id])
        if post_id not in found:
            raise _no_post(post_id)
        return found[post_id]

    async def get_posts(
        self, *, tenant_id: uuid.UUID, post_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, PostRecord]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(BATCH_GET_POSTS_SQL, tenant_id, post_ids)
        return {row["id"]: PostRecord(**row) for row in rows}

    async def delete_post(
        self, *, tenant_id: uuid.UUID, post_id: uuid.UUID, author_id: uuid.UUID
    ) -> None:
        """Deletes the post with its comments and likes (the foreign keys cascade). Its one
        PostDeleted event stands for them all: no PostUnliked is written for the likes."""
        async with self._db.transaction() as conn:
            owner = await conn.fetchval(
                """SELECT author_id FROM content_service.posts
                   WHERE tenant_id = $1 AND id = $2 FOR UPDATE""",
                tenant_id,
                post_id,
            )
            if owner is None:
                raise _no_post(post_id)
            if owner != author_id:
                raise PermissionDenied(
                    f"post {post_id} belongs to another user; only its author can delete it"
                )
            deleted = await conn.execute(
                "DELETE FROM content_service.posts WHERE tenant_id = $1 AND id = $2",
                tenant_id,
                post_id,
            )
            if deleted == "DELETE 1":
                await outbox.append(
                    conn, SCHEMA, [events.post_deleted(tenant_id, post_id, author_id)]
                )

    async def list_user_posts(
        self, *, tenant_id: uuid.UUID, author_id: uuid.UUID, after: uuid.UUID | None, limit: int
    ) -> list[PostRecord]:
        """The author's posts, newest first, older than `after`."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                LIST_USER_POSTS_SQL, tenant_id, author_id, after or NEWEST_CURSOR, limit
            )
        return [PostRecord(**row) for row in rows]

    async def list_posts_by_authors(
        self,
        *,
        tenant_id: uuid.UUID,
        author_ids: list[uuid.UUID],
        after: uuid.UUID | None,
        limit: int,
    ) -> list[PostRecord]:
        """The authors' posts merged, newest first, older than `after`; `author_ids` must
        be distinct (a repeated author's posts would be repeated)."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                LIST_POSTS_BY_AUTHORS_SQL, tenant_id, author_ids, after or NEWEST_CURSOR, limit
            )
        return [PostRecord(**row) for row in rows]

    async def create_comment(
        self, *, tenant_id: uuid.UUID, post_id: uuid.UUID, author_id: uuid.UUID, text: str
    ) -> CommentRecord:
        async with self._db.transaction() as conn:
            # Counting first locks the post, so it cannot be deleted before the insert.
            counted = await conn.fetchval(
                """UPDATE content_service.posts SET comment_count = comment_count + 1
                   WHERE tenant_id = $1 AND id = $2
                   RETURNING true""",
                tenant_id,
                post_id,
            )
            if not counted:
                raise _no_post(post_id)
            row = await conn.fetchrow(
                """INSERT INTO content_service.comments (tenant_id, id, post_id, author_id, text)
                   VALUES ($1, $2, $3, $4, $5)
                   RETURNING id, post_id, author_id, text, created_at""",
                tenant_id,
                new_id(),
                post_id,
                author_id,
                text,
            )
            assert row is not None
            comment = CommentRecord(**row)
            await outbox.append(
                conn,
                SCHEMA,
                [events.comment_created(tenant_id, comment.id, comment.post_id, comment.author_id)],
            )
        return comment

    async def latest_comments(
        self, *, tenant_id: uuid.UUID, post_ids: list[uuid.UUID], limit_per_post: int
    ) -> dict[uuid.UUID, list[CommentRecord]]:
        """Each existing post's newest comments, newest first; unknown posts are absent."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(BATCH_LIST_COMMENTS_SQL, tenant_id, post_ids, limit_per_post)
        comments: dict[uuid.UUID, list[CommentRecord]] = {}
        for row in rows:
            of_post = comments.setdefault(row["post_id"], [])
            if row["id"] is not None:
                of_post.append(CommentRecord(**row))
        return comments

    async def like_post(
        self, *, tenant_id: uuid.UUID, post_id: uuid.UUID, user_id: uuid.UUID
    ) -> bool:
        """True when the like is new; a repeat changes nothing."""
        async with self._db.transaction() as conn:
            # FOR KEY SHARE holds off a concurrent delete of the post (as the foreign key
            # check would) without queueing behind other likers' counter updates.
            if not await conn.fetchval(_POST_EXISTS + " FOR KEY SHARE", tenant_id, post_id):
                raise _no_post(post_id)
            inserted = await conn.fetchval(
                """INSERT INTO content_service.likes (tenant_id, post_id, user_id)
                   VALUES ($1, $2, $3)
                   ON CONFLICT DO NOTHING
                   RETURNING true""",
                tenant_id,
                post_id,
                user_id,
            )
            if inserted:
                await conn.execute(_ADD_LIKES, tenant_id, post_id, 1)
                await outbox.append(conn, SCHEMA, [events.post_liked(tenant_id, post_id, user_id)])
            return bool(inserted)

    async def unlike_post(
        self, *, tenant_id: uuid.UUID, post_id: uuid.UUID, user_id: uuid.UUID
    ) -> bool:
        """True when a like was removed; unliking a post one never liked changes nothing."""
        async with self._db.transaction() as conn:
            deleted = await conn.fetchval(
                """DELETE FROM content_service.likes
                   WHERE tenant_id = $1 AND post_id = $2 AND user_id = $3
                   RETURNING true""",
                tenant_id,
                post_id,
                user_id,
            )
            if deleted:
                await conn.execute(_ADD_LIKES, tenant_id, post_id, -1)
                await outbox.append(
                    conn, SCHEMA, [events.post_unliked(tenant_id, post_id, user_id)]
                )
            elif not await conn.fetchval(_POST_EXISTS, tenant_id, post_id):
                raise _no_post(post_id)
            return bool(deleted)

    async def stats_and_comments(
        self,
        *,
        tenant_id: uuid.UUID,
        viewer_id: uuid.UUID | None,
        post_ids: list[uuid.UUID],
        limit_per_post: int,
    ) -> tuple[dict[uuid.UUID, PostStatsRecord], dict[uuid.UUID, list[CommentRecord]]]:
        """get_post_stats and latest_comments in one statement: a feed page's posts with
        both cost PostgreSQL one query and the service one round trip, not two."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                BATCH_STATS_AND_COMMENTS_SQL, tenant_id, post_ids, viewer_id, limit_per_post
            )
        stats: dict[uuid.UUID, PostStatsRecord] = {}
        comments: dict[uuid.UUID, list[CommentRecord]] = {}
        for row in rows:
            post_id = row["post_id"]
            of_post = comments.get(post_id)
            if of_post is None:
                of_post = comments[post_id] = []
                stats[post_id] = PostStatsRecord(
                    post_id, row["like_count"], row["comment_count"], row["viewer_has_liked"]
                )
            if row["id"] is not None:
                of_post.append(
                    CommentRecord(
                        row["id"], post_id, row["author_id"], row["text"], row["created_at"]
                    )
                )
        return stats, comments

    async def get_post_stats(
        self, *, tenant_id: uuid.UUID, viewer_id: uuid.UUID | None, post_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, PostStatsRecord]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(BATCH_GET_POST_STATS_SQL, tenant_id, post_ids, viewer_id)
        return {row["post_id"]: PostStatsRecord(**row) for row in rows}
