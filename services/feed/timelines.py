"""Home timelines in Redis: one sorted set per user of "post_id:author_id", scored by the
post's creation time in milliseconds (from its UUIDv7 id), newest kept, capped.

Keys are tenant-scoped and carry one hash tag per user, `nova:feed:{<tenant>:<user>}:…`,
so a user's keys live in one Redis Cluster slot: every script below touches the keys of
one user only, and a deployment can move to a cluster without code changes.

- `…:tl` the timeline. Once built it always holds a sentinel member "", so "built and
  empty" (follows no one) differs from "missing" (new user, expired, evicted, Redis
  flushed), which the reader rebuilds from PostgreSQL. The sentinel's score is the
  timeline's floor: 0 while it holds everything, else the time of the newest post the cap
  pushed out (or a rebuild left out). Posts above the floor are all there; a page that
  reaches it continues from PostgreSQL.
- `…:big` the big authors the user follows (not fanned out; merged at read time).
- `…:seen` set for an hour when the user reads: the reader records activity in
  PostgreSQL at most hourly.

Fan-out writes only to timelines that exist (ADD_IF_BUILT), so an inactive user's expired
timeline is not recreated piecemeal; it is rebuilt whole when the user comes back. Every
write is idempotent (ZADD of the same member and score, ZREM, SADD, SREM), so an event
delivered again changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from services.runtime.feed_settings import FeedSettings

SENTINEL = ""

_READ = """
local floor = redis.call('ZSCORE', KEYS[1], '')
if not floor then return {0} end
local items = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], '(' .. floor,
                         'LIMIT', 0, tonumber(ARGV[2]))
local big = redis.call('SMEMBERS', KEYS[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if #big > 0 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
local fresh = redis.call('SET', KEYS[3], 1, 'NX', 'EX', 3600)
return {1, items, floor, big, fresh and 1 or 0}
"""

# Posts at or below the floor are left out (the pull path has them), then the oldest
# past the cap are pushed out and the floor raised to the newest of them.
_ADD_IF_BUILT = """
local floor = redis.call('ZSCORE', KEYS[1], '')
if not floor then return 0 end
floor = tonumber(floor)
for i = 2, #ARGV, 2 do
  if tonumber(ARGV[i]) > floor then redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
local over = redis.call('ZCARD', KEYS[1]) - 1 - tonumber(ARGV[1])
if over > 0 then
  local out = redis.call('ZRANGE', KEYS[1], over, over, 'WITHSCORES')
  redis.call('ZREMRANGEBYRANK', KEYS[1], 1, over)
  redis.call('ZADD', KEYS[1], out[2], '')
end
return 1
"""

_BIG_IF_BUILT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == 'add' then
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[2], redis.call('TTL', KEYS[1]))
else
  redis.call('SREM', KEYS[2], ARGV[2])
end
return 1
"""

_REPLACE = """
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZADD', KEYS[1], ARGV[4], '')
local big = tonumber(ARGV[2])
for i = 5, 4 + big do redis.call('SADD', KEYS[2], ARGV[i]) end
for i = 5 + big, #ARGV, 1000 do
  redis.call('ZADD', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
if big > 0 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
return 1
"""


def score_of(post_id: uuid.UUID) -> int:
    """Milliseconds since the epoch: a UUIDv7's first 48 bits."""
    return post_id.int >> 80


@dataclass(frozen=True, slots=True)
class Item:
    post_id: uuid.UUID
    author_id: uuid.UUID

    @property
    def member(self) -> str:
        return f"{self.post_id}:{self.author_id}"

    @staticmethod
    def of_member(member: bytes | str) -> Item:
        text = member.decode() if isinstance(member, bytes) else member
        post, _, author = text.partition(":")
        return Item(uuid.UUID(post), uuid.UUID(author))


@dataclass(frozen=True)
class StoredPage:
    """What one read of a stored timeline returned."""

    items: list[Item]
    """Newest first, at or before the requested time (the caller drops ties it has seen)
    and above the floor."""
    floor_ms: int
    """0: the timeline holds every post; else older posts than this are not stored."""
    big_authors: list[uuid.UUID]
    first_read_this_hour: bool


def _tag(tenant_id: uuid.UUID, user_id: uuid.UUID) -> str:
    return f"nova:feed:{{{tenant_id}:{user_id}}}"


def timeline_key(tenant_id: uuid.UUID, user_id: uuid.UUID) -> str:
    return f"{_tag(tenant_id, user_id)}:tl"


def big_key(tenant_id: uuid.UUID, user_id: uuid.UUID) -> str:
    return f"{_tag(tenant_id, user_id)}:big"


def seen_key(tenant_id: uuid.UUID, user_id: uuid.UUID) -> str:
    return f"{_tag(tenant_id, user_id)}:seen"


class Timelines:
    """The scripts, registered once per client (EVALSHA, loaded again after a restart)."""

    @classmethod
    def of(cls, redis: Redis, settings: FeedSettings) -> Timelines:
        """Capped at NOVA_FEED_MAX_ITEMS; a timeline unread for NOVA_FEED_ACTIVE_DAYS expires."""
        return cls(redis, max_items=settings.max_items, ttl_seconds=settings.active_days * 86400)

    def __init__(self, redis: Redis, *, max_items: int, ttl_seconds: int) -> None:
        self.redis = redis
        self.max_items = max_items
        self.ttl_seconds = ttl_seconds
        self._read = redis.register_script(_READ)
        self._add = redis.register_script(_ADD_IF_BUILT)
        self._big = redis.register_script(_BIG_IF_BUILT)
        self._replace = redis.register_script(_REPLACE)

    async def read(
        self, tenant_id: uuid.UUID, user_id: uuid.UUID, before_ms: int | None, count: int
    ) -> StoredPage | None:
        """Up to `count` items at or before `before_ms` (None: the newest), with the big
        authors the user follows; None when the timeline is missing. One round trip."""
        keys = [
            timeline_key(tenant_id, user_id),
            big_key(tenant_id, user_id),
            seen_key(tenant_id, user_id),
        ]
        top = "+inf" if before_ms is None else str(before_ms)
        reply: list[Any] = await self._read(keys=keys, args=[top, count, self.ttl_seconds])
        if not reply[0]:
            return None
        items = [Item.of_member(member) for member in reply[1]]
        big = [uuid.UUID(member.decode()) for member in reply[3]]
        return StoredPage(items, int(float(reply[2].decode())), big, bool(reply[4]))

    async def add(
        self,
        pipe: Pipeline,
        tenant_id: uuid.UUID,
        user_ids: Iterable[uuid.UUID],
        items: Sequence[Item],
    ) -> None:
        """Queues `items` into each user's timeline that exists (capped)."""
        if not items:
            return
        args: list[Any] = [self.max_items]
        for item in items:
            args += [score_of(item.post_id), item.member]
        for user_id in user_ids:
            # Through the Script object: the pipeline loads it first if Redis lacks it.
            await self._add(keys=[timeline_key(tenant_id, user_id)], args=args, client=pipe)

    @staticmethod
    def remove(
        pipe: Pipeline, tenant_id: uuid.UUID, user_ids: Iterable[uuid.UUID], items: Sequence[Item]
    ) -> None:
        if not items:
            return
        members = [item.member for item in items]
        for user_id in user_ids:
            pipe.zrem(timeline_key(tenant_id, user_id), *members)

    async def mark_big(
        self,
        pipe: Pipeline,
        tenant_id: uuid.UUID,
        user_ids: Iterable[uuid.UUID],
        author_id: uuid.UUID,
        *,
        big: bool,
    ) -> None:
        """Adds (or removes) a big author to the users' sets, for built timelines."""
        for user_id in user_ids:
            await self._big(
                keys=[timeline_key(tenant_id, user_id), big_key(tenant_id, user_id)],
                args=["add" if big else "remove", str(author_id)],
                client=pipe,
            )

    async def replace(
        self,
        tenant_id: uuid.UUID,
        user_id: uuid.UUID,
        items: Sequence[Item],
        big_authors: Sequence[uuid.UUID],
        *,
        complete: bool,
    ) -> None:
        """Writes a whole timeline at once (a rebuild): atomic, so a reader sees the old
        one or the new one. `complete`: `items` are all there is (else the oldest of them
        sets the floor)."""
        kept = items[: self.max_items]
        floor = 0 if complete or not kept else score_of(kept[-1].post_id)
        args: list[Any] = [self.ttl_seconds, len(big_authors), 0, floor]
        args += [str(author) for author in big_authors]
        for item in kept:
            args += [score_of(item.post_id), item.member]
        await self._replace(
            keys=[timeline_key(tenant_id, user_id), big_key(tenant_id, user_id)], args=args
        )
