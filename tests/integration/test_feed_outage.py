"""Fan-out through a Redis outage: while Redis is down the feed's consumer does not
dead-letter or skip the event (an outage is not the event's fault); it keeps its
position, and once Redis is back the post reaches the follower's timeline from the log."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis

from services.content.events import post_created
from services.feed.fanout import Fanout
from services.feed.reader import HomeFeed
from services.feed.repository import FeedRepository
from services.feed.timelines import Item, timeline_key
from services.registry import REGISTRY
from services.runtime.events.consumer import Consumer, ConsumerSettings
from services.runtime.events.model import Event
from services.runtime.events.pglog import PostgresLog
from services.runtime.feed_settings import FeedSettings
from services.runtime.ids import new_id
from services.runtime.redis_client import RedisSettings, open_redis
from services.runtime.spec import Dependencies
from services.user.events import followed, user_created
from tests.brokers import free_port, redis_server

SETTINGS = FeedSettings(max_items=100, active_days=7, big_author_followers=1000)
FAST = ConsumerSettings(batch_size=10, fetch_timeout_seconds=0.1, retry_backoff_seconds=0.01)


async def _stored(redis: Redis, tenant: uuid.UUID, user: uuid.UUID) -> list[uuid.UUID]:
    members = await redis.zrevrange(timeline_key(tenant, user), 0, -1)
    return [Item.of_member(m).post_id for m in members if isinstance(m, bytes) and m]


async def _until(check: Callable[[], Awaitable[bool]], seconds: float = 20.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached in {seconds} s")


async def test_a_post_made_while_redis_is_down_is_fanned_out_once_it_is_back(
    deps: Dependencies, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("services.feed.reader.CATCH_UP_DELAY_SECONDS", 0.0)
    tenant, author, reader = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    port, log = free_port(), PostgresLog(deps.db)
    group = f"test-feed-outage-{uuid.uuid4().hex[:8]}"
    async with log.publisher() as publisher, AsyncExitStack() as stack:

        async def publish(*events: Event) -> None:
            await publisher.publish(events)

        first = AsyncExitStack()
        url = await first.enter_async_context(redis_server(port=port, snapshot_dir=tmp_path))
        redis = await stack.enter_async_context(open_redis(url, RedisSettings(timeout_seconds=0.5)))
        fanout = Fanout(redis, SETTINGS)
        consumer = Consumer(group, log, deps.db, REGISTRY.topics, settings=FAST)
        fanout.register(consumer)
        await log.rewind(group, REGISTRY.topics, await _now(deps))
        stop = asyncio.Event()
        running = asyncio.create_task(consumer.run(stop))
        stack.push_async_callback(_stopped, running, stop)

        await publish(
            user_created(tenant, author, f"a{author.hex[:8]}"),
            user_created(tenant, reader, f"r{reader.hex[:8]}"),
            followed(tenant, reader, author),
        )
        await _until(lambda: _processed(consumer, 3))
        feed = HomeFeed(FeedRepository(deps.db), fanout.timelines, SETTINGS)
        assert await feed.page(tenant, reader, None, 20) == []
        await feed.close()  # the rebuild wrote the reader's (empty) timeline
        assert await redis.exists(timeline_key(tenant, reader)) == 1

        await first.aclose()  # Redis stops (and snapshots the timeline)
        post = new_id()
        await publish(post_created(tenant, post, author))
        await asyncio.sleep(1.0)  # the consumer meets the outage, more than once
        assert consumer.stats.processed == 3
        assert consumer.stats.dead_lettered == 0

        await stack.enter_async_context(redis_server(port=port, snapshot_dir=tmp_path))
        await _until(lambda: _has(redis, tenant, reader, post))
        assert consumer.stats.dead_lettered == 0
        assert consumer.stats.processed == 4


async def _has(redis: Redis, tenant: uuid.UUID, user: uuid.UUID, post: uuid.UUID) -> bool:
    return post in await _stored(redis, tenant, user)


async def _processed(consumer: Consumer, count: int) -> bool:
    return consumer.stats.processed >= count


async def _stopped(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    await asyncio.wait_for(task, 10)


async def _now(deps: Dependencies) -> datetime:
    async with deps.db.connection() as conn:
        now: datetime = await conn.fetchval("SELECT clock_timestamp()")
    return now
