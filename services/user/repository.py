"""SQL for the user service; every method is one transaction and returns plain dataclasses.

Every change also writes its domain event (built in services.user.events) to
user_service.outbox in the same transaction (services.runtime.events.outbox), so an event
exists exactly when its change committed; a call that changes nothing (a repeated follow,
preferences set to their values) writes none.
"""

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from services.runtime.db import Database
from services.runtime.errors import AlreadyExists, NotFound
from services.runtime.events import outbox
from services.runtime.ids import new_id
from services.runtime.pagination import NEWEST_CURSOR
from services.user import events


@dataclass(frozen=True)
class UserRecord:
    id: uuid.UUID
    handle: str
    email: str
    display_name: str
    bio: str
    avatar_url: str
    follower_count: int
    following_count: int
    created_at: datetime
    followed_by_viewer: bool


@dataclass(frozen=True)
class PreferencesRecord:
    language: str = "en"
    time_zone: str = "UTC"
    email_notifications: bool = True
    interests: list[str] = field(default_factory=list)
    show_sensitive_content: bool = False


PREFERENCE_FIELDS = tuple(PreferencesRecord.__dataclass_fields__)

SCHEMA = "user_service"
"""The service's schema, where its outbox is (services/user/service.py declares it)."""

# $1 tenant, $2 viewer (NULL when anonymous); the join answers followed_by_viewer.
_SELECT_USERS = """
    SELECT u.id, u.handle, u.email, u.display_name, u.bio, u.avatar_url,
           u.follower_count, u.following_count, u.created_at,
           f.follower_id IS NOT NULL AS followed_by_viewer
    FROM user_service.users u
    LEFT JOIN user_service.follows f
           ON f.tenant_id = u.tenant_id AND f.follower_id = $2 AND f.followee_id = u.id
"""

# $1 tenant, $2 viewer (NULL when anonymous), $3 user ids.
BATCH_GET_USERS_SQL = _SELECT_USERS + "WHERE u.tenant_id = $1 AND u.id = ANY($3::uuid[])"


def _follow_list_sql(*, anchor: str, other: str) -> str:
    """Following and followers are one query read from opposite ends of a follow: the
    `other` ends of the follows whose `anchor` is $3."""
    return f"""
    SELECT l.id AS follow_id, u.id, u.handle, u.email, u.display_name, u.bio,
           u.avatar_url, u.follower_count, u.following_count, u.created_at,
           f.follower_id IS NOT NULL AS followed_by_viewer
    FROM user_service.follows l
    JOIN user_service.users u ON u.tenant_id = l.tenant_id AND u.id = l.{other}
    LEFT JOIN user_service.follows f ON f.tenant_id = u.tenant_id
         AND f.follower_id = $2 AND f.followee_id = u.id
    WHERE l.tenant_id = $1 AND l.{anchor} = $3
      AND l.id < $4
    ORDER BY l.id DESC
    LIMIT $5
"""


# $1 tenant, $2 viewer (NULL when anonymous), $3 user, $4 cursor (older than this id),
# $5 limit: (follow id, user) rows, newest follow first.
LIST_FOLLOWING_SQL = _follow_list_sql(anchor="follower_id", other="followee_id")
LIST_FOLLOWERS_SQL = _follow_list_sql(anchor="followee_id", other="follower_id")


def _user(row: asyncpg.Record) -> UserRecord:
    return UserRecord(**dict(row))


def _no_user(user_id: uuid.UUID) -> NotFound:
    return NotFound(f"no user with id {user_id}")


def _changed_fields(before: PreferencesRecord, after: PreferencesRecord) -> list[str]:
    """The preference fields whose value differs, in declaration order: what consumers
    must react to (an update that sets a field to its current value changed nothing)."""
    return [name for name in PREFERENCE_FIELDS if getattr(before, name) != getattr(after, name)]


class UserRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_user(
        self,
        *,
        tenant_id: uuid.UUID,
        user_id: uuid.UUID,
        handle: str,
        email: str,
        password_hash: str,
        display_name: str,
    ) -> UserRecord:
        async with self._db.transaction() as conn:
            try:
                await conn.execute(
                    """INSERT INTO user_service.users
                           (tenant_id, id, handle, email, password_hash, display_name)
                       VALUES ($1, $2, $3, $4, $5, $6)""",
                    tenant_id,
                    user_id,
                    handle,
                    email,
                    password_hash,
                    display_name,
                )
            except asyncpg.UniqueViolationError as error:
                if error.constraint_name == "users_email_key":
                    raise AlreadyExists(f"the e-mail {email!r} already has an account") from None
                raise AlreadyExists(f"the handle {handle!r} is taken; choose another") from None
            await outbox.append(conn, SCHEMA, [events.user_created(tenant_id, user_id, handle)])
            row = await conn.fetchrow(
                _SELECT_USERS + "WHERE u.tenant_id = $1 AND u.id = $3", tenant_id, None, user_id
            )
        assert row is not None
        return _user(row)

    async def get_user(
        self,
        *,
        tenant_id: uuid.UUID,
        viewer_id: uuid.UUID | None,
        user_id: uuid.UUID | None = None,
        handle: str | None = None,
    ) -> UserRecord:
        async with self._db.connection() as conn:
            if user_id is not None:
                row = await conn.fetchrow(
                    _SELECT_USERS + "WHERE u.tenant_id = $1 AND u.id = $3",
                    tenant_id,
                    viewer_id,
                    user_id,
                )
            else:
                row = await conn.fetchrow(
                    _SELECT_USERS + "WHERE u.tenant_id = $1 AND lower(u.handle) = lower($3)",
                    tenant_id,
                    viewer_id,
                    handle,
                )
        if row is None:
            raise NotFound(f"no user with id {user_id}" if user_id else f"no user @{handle}")
        return _user(row)

    async def get_users(
        self, *, tenant_id: uuid.UUID, viewer_id: uuid.UUID | None, user_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, UserRecord]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                BATCH_GET_USERS_SQL,
                tenant_id,
                viewer_id,
                user_ids,
            )
        return {row["id"]: _user(row) for row in rows}

    async def find_credentials(
        self, *, tenant_id: uuid.UUID, login: str
    ) -> tuple[UserRecord, str] | None:
        """The user whose handle or e-mail is `login`, with their password hash."""
        column = "email" if "@" in login else "handle"
        async with self._db.connection() as conn:
            row = await conn.fetchrow(
                _SELECT_USERS.replace("SELECT ", "SELECT u.password_hash, ", 1)
                + f"WHERE u.tenant_id = $1 AND lower(u.{column}) = lower($3)",
                tenant_id,
                None,
                login,
            )
        if row is None:
            return None
        values = dict(row)
        password_hash = values.pop("password_hash")
        return UserRecord(**values), password_hash

    async def replace_password_hash(
        self, *, tenant_id: uuid.UUID, user_id: uuid.UUID, old_hash: str, new_hash: str
    ) -> bool:
        """Stores `new_hash` where the user's hash is still `old_hash`; False when it
        changed meanwhile (another log-in's rehash), which is kept."""
        async with self._db.connection() as conn:
            status = await conn.execute(
                """UPDATE user_service.users SET password_hash = $4
                    WHERE tenant_id = $1 AND id = $2 AND password_hash = $3""",
                tenant_id,
                user_id,
                old_hash,
                new_hash,
            )
        return status == "UPDATE 1"

    async def update_profile(
        self,
        *,
        tenant_id: uuid.UUID,
        user_id: uuid.UUID,
        display_name: str | None,
        bio: str | None,
        avatar_url: str | None,
    ) -> UserRecord:
        async with self._db.transaction() as conn:
            updated = await conn.execute(
                """UPDATE user_service.users
                   SET display_name = coalesce($3, display_name),
                       bio = coalesce($4, bio),
                       avatar_url = coalesce($5, avatar_url),
                       updated_at = now()
                   WHERE tenant_id = $1 AND id = $2""",
                tenant_id,
                user_id,
                display_name,
                bio,
                avatar_url,
            )
            if updated == "UPDATE 0":
                raise _no_user(user_id)
            row = await conn.fetchrow(
                _SELECT_USERS + "WHERE u.tenant_id = $1 AND u.id = $3", tenant_id, None, user_id
            )
        assert row is not None
        return _user(row)

    async def follow(
        self, *, tenant_id: uuid.UUID, follower_id: uuid.UUID, followee_id: uuid.UUID
    ) -> bool:
        """True when the follow is new; a repeat changes nothing."""
        async with self._db.transaction() as conn:
            try:
                inserted = await conn.fetchval(
                    """INSERT INTO user_service.follows (tenant_id, follower_id, followee_id, id)
                       VALUES ($1, $2, $3, $4)
                       ON CONFLICT DO NOTHING
                       RETURNING true""",
                    tenant_id,
                    follower_id,
                    followee_id,
                    new_id(),
                )
            except asyncpg.ForeignKeyViolationError as error:
                missing = (
                    follower_id if "follower" in (error.constraint_name or "") else followee_id
                )
                raise _no_user(missing) from None
            if inserted:
                await self._count_follow(conn, tenant_id, follower_id, followee_id, 1)
                await outbox.append(
                    conn, SCHEMA, [events.followed(tenant_id, follower_id, followee_id)]
                )
            return bool(inserted)

    async def unfollow(
        self, *, tenant_id: uuid.UUID, follower_id: uuid.UUID, followee_id: uuid.UUID
    ) -> bool:
        """True when a follow was removed; unfollowing someone not followed changes nothing."""
        async with self._db.transaction() as conn:
            deleted = await conn.fetchval(
                """DELETE FROM user_service.follows
                   WHERE tenant_id = $1 AND follower_id = $2 AND followee_id = $3
                   RETURNING true""",
                tenant_id,
                follower_id,
                followee_id,
            )
            if deleted:
                await self._count_follow(conn, tenant_id, follower_id, followee_id, -1)
                await outbox.append(
                    conn, SCHEMA, [events.unfollowed(tenant_id, follower_id, followee_id)]
                )
            elif not await self._exists(conn, tenant_id, followee_id):
                raise _no_user(followee_id)
            return bool(deleted)

    @staticmethod
    async def _count_follow(
        conn: asyncpg.Connection,
        tenant_id: uuid.UUID,
        follower_id: uuid.UUID,
        followee_id: uuid.UUID,
        delta: int,
    ) -> None:
        # One statement for both rows: it locks them in primary-key order, so a follow
        # and the reverse follow running at once cannot deadlock.
        await conn.execute(
            """UPDATE user_service.users
               SET following_count = following_count + CASE WHEN id = $2 THEN $4 ELSE 0 END,
                   follower_count = follower_count + CASE WHEN id = $3 THEN $4 ELSE 0 END
               WHERE tenant_id = $1 AND id = ANY(ARRAY[$2, $3]::uuid[])""",
            tenant_id,
            follower_id,
            followee_id,
            delta,
        )

    @staticmethod
    async def _exists(conn: asyncpg.Connection, tenant_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        return bool(
            await conn.fetchval(
                "SELECT true FROM user_service.users WHERE tenant_id = $1 AND id = $2",
                tenant_id,
                user_id,
            )
        )

    async def list_following(
        self,
        *,
        tenant_id: uuid.UUID,
        viewer_id: uuid.UUID | None,
        user_id: uuid.UUID,
        after: uuid.UUID | None,
        limit: int,
    ) -> list[tuple[uuid.UUID, UserRecord]]:
        """(follow id, followee) pairs, newest follow first, older than `after`."""
        return await self._list_follows(
            LIST_FOLLOWING_SQL, tenant_id, viewer_id, user_id, after, limit
        )

    async def list_followers(
        self,
        *,
        tenant_id: uuid.UUID,
        viewer_id: uuid.UUID | None,
        user_id: uuid.UUID,
        after: uuid.UUID | None,
        limit: int,
    ) -> list[tuple[uuid.UUID, UserRecord]]:
        """(follow id, follower) pairs, newest follow first, older than `after`."""
        return await self._list_follows(
            LIST_FOLLOWERS_SQL, tenant_id, viewer_id, user_id, after, limit
        )

    async def _list_follows(
        self,
        sql: str,
        tenant_id: uuid.UUID,
        viewer_id: uuid.UUID | None,
        user_id: uuid.UUID,
        after: uuid.UUID | None,
        limit: int,
    ) -> list[tuple[uuid.UUID, UserRecord]]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                sql, tenant_id, viewer_id, user_id, after or NEWEST_CURSOR, limit
            )
            if not rows and after is None and not await self._exists(conn, tenant_id, user_id):
                raise _no_user(user_id)
        result = []
        for row in rows:
            values = dict(row)
            follow_id = values.pop("follow_id")
            result.append((follow_id, UserRecord(**values)))
        return result

    async def get_preferences(
        self, *, tenant_id: uuid.UUID, user_id: uuid.UUID
    ) -> PreferencesRecord:
        async with self._db.connection() as conn:
            row = await conn.fetchrow(
                f"""SELECT {", ".join(PREFERENCE_FIELDS)} FROM user_service.preferences
                    WHERE tenant_id = $1 AND user_id = $2""",
                tenant_id,
                user_id,
            )
        return PreferencesRecord(**dict(row)) if row else PreferencesRecord()

    async def update_preferences(
        self, *, tenant_id: uuid.UUID, user_id: uuid.UUID, changes: Mapping[str, Any]
    ) -> PreferencesRecord:
        """Applies `changes` (field name -> value) under a row lock, so two partial updates
        running at once both land. The event names only the fields whose value changed
        (compared under that lock), and there is none when no value changed."""
        defaults = PreferencesRecord()
        async with self._db.transaction() as conn:
            try:
                await conn.execute(
                    """INSERT INTO user_service.preferences
                           (tenant_id, user_id, language, time_zone, email_notifications,
                            interests, show_sensitive_content)
                       VALUES ($1, $2, $3, $4, $5, $6, $7)
                       ON CONFLICT (tenant_id, user_id) DO NOTHING""",
                    tenant_id,
                    user_id,
                    *dataclasses.astuple(defaults),
                )
            except asyncpg.ForeignKeyViolationError:
                raise _no_user(user_id) from None
            row = await conn.fetchrow(
                f"""SELECT {", ".join(PREFERENCE_FIELDS)} FROM user_service.preferences
                    WHERE tenant_id = $1 AND user_id = $2 FOR UPDATE""",
                tenant_id,
                user_id,
            )
            assert row is not None
            current = PreferencesRecord(**dict(row))
            updated = dataclasses.replace(current, **changes)
            await conn.execute(
                """UPDATE user_service.preferences
                   SET language = $3, time_zone = $4, email_notifications = $5,
                       interests = $6, show_sensitive_content = $7, updated_at = now()
                   WHERE tenant_id = $1 AND user_id = $2""",
                tenant_id,
                user_id,
                *dataclasses.astuple(updated),
            )
            changed = _changed_fields(current, updated)
            if changed:
                await outbox.append(
                    conn, SCHEMA, [events.preferences_updated(tenant_id, user_id, changed)]
                )
        return updated
