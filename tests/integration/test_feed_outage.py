"""Fan-out through a Redis outage: while Redis is down the feed's consumer does not
dead-letter or skip the event (an outage is not the event's fault); it keeps its
position, and once Redis is back the post reaches the follower's timeline from the log."""

from __future__ import annotations

import asyncio
import random
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.content.events import post_created
from services.feed.fanout import Fanout
from services.feed.reader import HomeFeed
from services.feed.repository import FeedRepository
from services.feed.timelines import Item, timeline_key
from services.registry import REGISTRY
from services.runtime.db import Database, open_database
from services.runtime.events.consumer import Consumer, ConsumerSettings
from services.runtime.events.model import Event
from services.runtime.events.pglog import PostgresLog
from services.runtime.feed_settings import FeedSettings
from services.runtime.ids import new_id
from services.runtime.process import migrate_services
from services.runtime.redis_client import RedisSettings, open_redis
from services.user.events import followed, user_created
from tests.brokers import redis_server
from tests.conftest import fresh_database

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


@pytest.fixture
async def db(server_url: str) -> AsyncIterator[Database]:
    """A database of its own: the session's feed group (tests/conftest.py feed_events)
    would otherwise take this test's events into the shared projections first."""
    async with (
        fresh_database(server_url, "feedoutage") as url,
        open_database(url, size=8, acquire_timeout_ms=5000) as opened,
    ):
        await migrate_services(opened, REGISTRY.services.values())
        yield opened


async def test_a_post_made_while_redis_is_down_is_fanned_out_once_it_is_back(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("services.feed.reader.CATCH_UP_DELAY_SECONDS", 0.0)
    tenant, author, reader = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    port, log = _port_below_ephemeral_range(), PostgresLog(db)
    group = f"test-feed-outage-{uuid.uuid4().hex[:8]}"
    async with log.publisher() as publisher, AsyncExitStack() as stack:

        async def publish(*events: Event) -> None:
            await publisher.publish(events)

        first = AsyncExitStack()
        url = await first.enter_async_context(redis_server(port=port, snapshot_dir=tmp_path))
        redis = await stack.enter_async_context(open_redis(url, RedisSettings(timeout_seconds=0.5)))
        fanout = Fanout(redis, SETTINGS)
        consumer = Consumer(group, log, db, REGISTRY.topics, settings=FAST)
        fanout.register(consumer)

        stop = asyncio.Event()
        running = asyncio.create_task(consumer.run(stop))
        stack.push_async_callback(_stopped, running, stop)

        await publish(
            user_created(tenant, author, f"a{author.hex[:8]}"),
            user_created(tenant, reader, f"r{reader.hex[:8]}"),
            followed(tenant, reader, author),
        )
        # Other tests' events may share the log: wait on this tenant's follow, not counts.
        await _until(lambda: _follows(db, tenant, reader, author))
        feed = HomeFeed(FeedRepository(db), fanout.timelines, SETTINGS)
        assert await feed.page(tenant, reader, None, 20) == []
        await feed.close()  # the rebuild wrote the reader's (empty) timeline
        assert await redis.exists(timeline_key(tenant, reader)) == 1

        await first.aclose()  # Redis stops (and snapshots the timeline)
        post = new_id()
        await publish(post_created(tenant, post, author))
        await asyncio.sleep(1.0)  # the consumer meets the outage, more than once
        assert consumer.stats.dead_lettered == 0

        await stack.enter_async_context(redis_server(port=port, snapshot_dir=tmp_path))
        # Arriving now proves it was neither skipped nor committed past during the outage.
        await _until(lambda: _has(redis, tenant, reader, post))
        assert consumer.stats.dead_lettered == 0


def _port_below_ephemeral_range() -> int:
    """A free port the kernel never hands out as a connection's own: while Redis is down,
    a reconnect to an ephemeral port can connect to itself (TCP simultaneous open) and
    read its own commands back as replies."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(max(1024, low - 8000), low), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


async def _has(redis: Redis, tenant: uuid.UUID, user: uuid.UUID, post: uuid.UUID) -> bool:
    try:
        return post in await _stored(redis, tenant, user)
    except RedisError:  # this client's pooled connection from before the restart
        return False


async def _follows(
    db: Database, tenant: uuid.UUID, follower: uuid.UUID, followee: uuid.UUID
) -> bool:
    async with db.connection() as conn:
        found = await conn.fetchval(
            """SELECT count(*) FROM feed_service.follows
                WHERE tenant_id = $1 AND follower_id = $2 AND followee_id = $3""",
            tenant,
            follower,
            followee,
        )
    return bool(found)


async def _stopped(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    await asyncio.wait_for(task, 10)
