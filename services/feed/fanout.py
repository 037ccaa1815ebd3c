"""The feed's consumer group: its projections in PostgreSQL and fan-out on write into the
Redis timelines, from PostCreated, PostDeleted, Followed, Unfollowed and UserCreated.

Each handler updates the projections on the consumer's connection (in the transaction
that records the event as processed) and then writes Redis before that transaction
commits. The Redis writes are idempotent, so if the commit is lost the redelivered event
writes the same again; a processed event is never delivered to its effect twice, so a
PostCreated replayed after its PostDeleted cannot bring the post back. An unreachable
Redis is an outage, not the event's fault: the batch is not committed, and fan-out
resumes from the log once Redis answers.

- PostCreated: into the author's own timeline, and — unless the author is big — into the
  timelines of the followers active within NOVA_FEED_ACTIVE_DAYS (others are rebuilt
  when they return). A big author's post costs no write per follower; readers merge it.
- PostDeleted: out of the author's and every follower's timeline, and marked deleted in
  the projection (rebuilds and the pull path skip it).
- Followed: the followee's recent posts merged into the follower's timeline, or, for a
  big followee, the followee added to the follower's big authors. Crossing the big
  threshold moves every follower's timeline from one way to the other.
- Unfollowed: the followee's posts out of the follower's timeline.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import TypeVar

import asyncpg
from redis.asyncio import Redis

from nova.events.v1 import events_pb2
from services.feed import repository
from services.feed.timelines import Item, Timelines
from services.runtime.events.consumer import Consumer
from services.runtime.events.model import Event
from services.runtime.feed_settings import FeedSettings

GROUP = "feed"
PIPELINE_CHUNK = 1000
"""Timeline writes sent per pipeline: bounds the memory of one author's fan-out."""


class Fanout:
    def __init__(self, redis: Redis, settings: FeedSettings) -> None:
        self.redis = redis
        self.settings = settings
        self.timelines = Timelines.of(redis, settings)

    def register(self, consumer: Consumer) -> None:
        consumer.on("PostCreated", self.post_created)
        consumer.on("PostDeleted", self.post_deleted)
        consumer.on("Followed", self.followed)
        consumer.on("Unfollowed", self.unfollowed)
        consumer.on("UserCreated", self.user_created)

    async def post_created(
        self, conn: asyncpg.Connection, event: Event, envelope: events_pb2.EventEnvelope
    ) -> None:
        payload = _unpack(envelope, events_pb2.PostCreated())
        post, author = uuid.UUID(payload.post_id), uuid.UUID(payload.author_id)
        tenant = event.tenant_id
        if not await repository.add_post(conn, tenant, post, author):
            return  # known already: a redelivery, or created after its own deletion
        readers = [author]
        if not await repository.is_big(conn, tenant, author):
            readers += await repository.followers(conn, tenant, author, self._active_since())
        await self._add(tenant, readers, [Item(post, author)])

    async def post_deleted(
        self, conn: asyncpg.Connection, event: Event, envelope: events_pb2.EventEnvelope
    ) -> None:
        payload = _unpack(envelope, events_pb2.PostDeleted())
        post, author = uuid.UUID(payload.post_id), uuid.UUID(payload.author_id)
        tenant = event.tenant_id
        await repository.delete_post(conn, tenant, post)
        readers = [author, *await repository.followers(conn, tenant, author)]
        for chunk in _chunks(readers):
            async with self.redis.pipeline(transaction=False) as pipe:
                self.timelines.remove(pipe, tenant, chunk, [Item(post, author)])
                await pipe.execute()

    async def followed(
        self, conn: asyncpg.Connection, event: Event, envelope: events_pb2.EventEnvelope
    ) -> None:
        payload = _unpack(envelope, events_pb2.Followed())
        follower, followee = uuid.UUID(payload.follower_id), uuid.UUID(payload.followee_id)
        tenant = event.tenant_id
        if await repository.add_follow(conn, tenant, follower, followee) is None:
            return
        was_big, big = await repository.settle_big(
            conn, tenant, followee, self.settings.big_author_followers
        )
        if big and not was_big:
            await self._promote(conn, tenant, followee)
        elif big:
            async with self.redis.pipeline(transaction=False) as pipe:
                await self.timelines.mark_big(pipe, tenant, [follower], followee, big=True)
                await pipe.execute()
        else:
            recent = await repository.recent_posts(conn, tenant, followee, self.settings.max_items)
            await self._add(tenant, [follower], recent)

    async def unfollowed(
        self, conn: asyncpg.Connection, event: Event, envelope: events_pb2.EventEnvelope
    ) -> None:
        payload = _unpack(envelope, events_pb2.Unfollowed())
        follower, followee = uuid.UUID(payload.follower_id), uuid.UUID(payload.followee_id)
        tenant = event.tenant_id
        if await repository.remove_follow(conn, tenant, follower, followee) is None:
            return
        recent = await repository.recent_posts(conn, tenant, followee, self.settings.max_items)
        async with self.redis.pipeline(transaction=False) as pipe:
            self.timelines.remove(pipe, tenant, [follower], recent)
            await self.timelines.mark_big(pipe, tenant, [follower], followee, big=False)
            await pipe.execute()
        was_big, big = await repository.settle_big(
            conn, tenant, followee, self.settings.big_author_followers
        )
        if was_big and not big:
            await self._demote(conn, tenant, followee)

    async def user_created(
        self, conn: asyncpg.Connection, event: Event, envelope: events_pb2.EventEnvelope
    ) -> None:
        payload = _unpack(envelope, events_pb2.UserCreated())
        await repository.add_member(conn, event.tenant_id, uuid.UUID(payload.user_id))

    async def _promote(
        self, conn: asyncpg.Connection, tenant: uuid.UUID, author: uuid.UUID
    ) -> None:
        """The author became big: every follower merges their posts at read time from now
        on (the posts already in their timelines stay)."""
        everyone = await repository.followers(conn, tenant, author)
        for chunk in _chunks(everyone):
            async with self.redis.pipeline(transaction=False) as pipe:
                await self.timelines.mark_big(pipe, tenant, chunk, author, big=True)
                await pipe.execute()

    async def _demote(self, conn: asyncpg.Connection, tenant: uuid.UUID, author: uuid.UUID) -> None:
        """The author is no longer big: their recent posts go into the active followers'
        timelines, which stop merging them at read time."""
        everyone = await repository.followers(conn, tenant, author)
        recent = await repository.recent_posts(conn, tenant, author, self.settings.max_items)
        for chunk in _chunks(everyone):
            async with self.redis.pipeline(transaction=False) as pipe:
                await self.timelines.mark_big(pipe, tenant, chunk, author, big=False)
                await self.timelines.add(pipe, tenant, chunk, recent)
                await pipe.execute()

    async def _add(
        self, tenant: uuid.UUID, readers: Sequence[uuid.UUID], items: Sequence[Item]
    ) -> None:
        if not items:
            return
        for chunk in _chunks(readers):
            async with self.redis.pipeline(transaction=False) as pipe:
                await self.timelines.add(pipe, tenant, chunk, items)
                await pipe.execute()

    def _active_since(self) -> datetime:
        return datetime.now(UTC) - timedelta(days=self.settings.active_days)


_Payload = TypeVar(
    "_Payload",
    events_pb2.PostCreated,
    events_pb2.PostDeleted,
    events_pb2.Followed,
    events_pb2.Unfollowed,
    events_pb2.UserCreated,
)


def _unpack(envelope: events_pb2.EventEnvelope, payload: _Payload) -> _Payload:
    if not envelope.payload.Unpack(payload):
        raise ValueError(f"the payload is {envelope.payload.TypeName()}, not what the type says")
    return payload


def _chunks(users: Sequence[uuid.UUID]) -> list[list[uuid.UUID]]:
    iterator = iter(users)
    return [chunk for chunk in iter(lambda: list(islice(iterator, PIPELINE_CHUNK)), [])]
