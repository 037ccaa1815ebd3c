"""Home timelines against real Redis and PostgreSQL: fan-out on write in order and capped,
deletes and unfollows, follows merged in, big authors merged at read time, inactive users
skipped and rebuilt on return, a missing timeline served from the pull path and rebuilt
once for a thousand concurrent readers, paging across the cap with no gap and no
duplicate, and Redis failing (reads still answer).

The consumer's handlers are called here directly, each in a transaction as the consumer
runs them (tests/integration/test_feed_service.py runs them through the event path).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from services.content.events import post_created, post_deleted
from services.feed import fanout as fanout_module
from services.feed.fanout import Fanout
from services.feed.reader import HomeFeed
from services.feed.repository import SCHEMA, FeedRepository
from services.feed.timelines import Item, timeline_key
from services.runtime.db import Database
from services.runtime.events.model import Event
from services.runtime.feed_settings import FeedSettings
from services.runtime.ids import new_id
from services.runtime.migrations import migrate
from services.runtime.redis_client import RedisSettings, open_redis
from services.runtime.spec import Dependencies
from services.user.events import followed, unfollowed, user_created
from tests.integration.test_client_fakes import Metrics

MIGRATIONS = Path(fanout_module.__file__).parent / "migrations"
SETTINGS = FeedSettings(max_items=100, active_days=7, big_author_followers=3)


@pytest.fixture(scope="module")
async def db(deps: Dependencies) -> Database:
    async with deps.db.connection() as conn:
        await migrate(conn, schema=SCHEMA, directory=MIGRATIONS)
    return deps.db


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    async with open_redis(redis_url, RedisSettings()) as client:
        yield client


class Feed:
    """One tenant's feed: the handlers, the reader, and helpers to drive them."""

    def __init__(self, db: Database, redis: Redis, settings: FeedSettings = SETTINGS) -> None:
        self.db, self.redis = db, redis
        self.tenant = uuid.uuid4()
        self.fanout = Fanout(redis, settings)
        self.metrics = Metrics()
        self.reader = HomeFeed(
            FeedRepository(db), self.fanout.timelines, settings, meter=self.metrics.meter
        )

    async def apply(self, *events: Event) -> None:
        handlers = {
            "PostCreated": self.fanout.post_created,
            "PostDeleted": self.fanout.post_deleted,
            "Followed": self.fanout.followed,
            "Unfollowed": self.fanout.unfollowed,
            "UserCreated": self.fanout.user_created,
        }
        for event in events:
            async with self.db.transaction() as conn:
                await handlers[event.event_type](conn, event, event.decode())

    async def user(self) -> uuid.UUID:
        user = uuid.uuid4()
        await self.apply(user_created(self.tenant, user, f"u{user.hex[:8]}"))
        return user

    async def post(self, author: uuid.UUID) -> uuid.UUID:
        post = new_id()
        await self.apply(post_created(self.tenant, post, author))
        return post

    async def page(
        self, user: uuid.UUID, size: int = 20, before: uuid.UUID | None = None
    ) -> list[uuid.UUID]:
        items = await self.reader.page(self.tenant, user, before, size)
        return [item.post_id for item in items[:size]]

    async def stored(self, user: uuid.UUID) -> list[uuid.UUID]:
        members = await self.redis.zrevrange(timeline_key(self.tenant, user), 0, -1)
        return [Item.of_member(m).post_id for m in members if isinstance(m, bytes) and m]

    async def build(self, user: uuid.UUID) -> None:
        """Reads once, so the timeline exists, and waits for its rebuild."""
        await self.page(user)
        await self.settle()

    async def settle(self) -> None:
        for task in list(self.reader._background):
            await task


@pytest.fixture
async def feed(db: Database, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Feed]:
    monkeypatch.setattr("services.feed.reader.CATCH_UP_DELAY_SECONDS", 0.0)
    feed = Feed(db, redis)
    yield feed
    await feed.reader.close()  # background rebuilds finish before Redis closes


async def test_posts_fan_out_to_followers_newest_first(feed: Feed) -> None:
    author, reader, stranger = await feed.user(), await feed.user(), await feed.user()
    await feed.apply(followed(feed.tenant, reader, author))
    await feed.build(reader)
    await feed.build(stranger)
    posts = [await feed.post(author) for _ in range(5)]
    assert await feed.stored(reader) == posts[::-1]
    assert await feed.page(reader) == posts[::-1]
    assert await feed.page(stranger) == []
    assert await feed.page(author) == posts[::-1], "authors see their own posts"


async def test_a_missing_timeline_is_served_from_postgres_then_rebuilt(feed: Feed) -> None:
    author, reader = await feed.user(), await feed.user()
    await feed.apply(followed(feed.tenant, reader, author))
    posts = [await feed.post(author) for _ in range(3)]
    assert await feed.stored(reader) == [], "no timeline yet: fan-out skipped it"
    assert await feed.page(reader) == posts[::-1], "never an empty first page"
    await feed.settle()
    assert await feed.stored(reader) == posts[::-1]
    assert feed.metrics.total("nova.feed.timeline_missing") == 1


async def test_a_thousand_readers_of_a_missing_timeline_rebuild_it_once(feed: Feed) -> None:
    author, reader = await feed.user(), await feed.user()
    await feed.apply(followed(feed.tenant, reader, author))
    posts = [await feed.post(author) for _ in range(3)]
    pages = await asyncio.gather(*(feed.page(reader) for _ in range(1000)))
    await feed.settle()
    assert all(page == posts[::-1] for page in pages)
    assert feed.reader.rebuilds_started == 1
    assert feed.reader.pulls.loads == 1, "one query served the thousand"


async def test_a_cancelled_reader_does_not_cancel_the_others(
    feed: Feed, monkeypatch: pytest.MonkeyPatch
) -> None:
    author, reader = await feed.user(), await feed.user()
    await feed.apply(followed(feed.tenant, reader, author))
    post = await feed.post(author)
    pull = feed.reader.repository.pull
    started = asyncio.Event()

    async def slow_pull(*args: Any) -> list[Item]:
        started.set()
        await asyncio.sleep(0.2)
        return await pull(*args)

    monkeypatch.setattr(feed.reader.repository, "pull", slow_pull)
    first = asyncio.create_task(feed.page(reader))
    second = asyncio.create_task(feed.page(reader))
    await started.wait()
    first.cancel()  # its deadline passed while both wait on the one pull
    assert await second == [post]
    with pytest.raises(asyncio.CancelledError):
        await first
    assert feed.reader.pulls.loads == 1


async def test_a_flushed_redis_rebuilds_timelines_on_their_next_read(
    feed: Feed, redis_url: str
) -> None:
    author, reader = await feed.user(), await feed.user()
    await feed.apply(followed(feed.tenant, reader, author))
    await feed.build(reader)
    posts = [await feed.post(author) for _ in range(2)]
    await feed.redis.delete(timeline_key(feed.tenant, reader))  # evicted, or FLUSHALL
    assert await feed.page(reader) == posts[::-1]
    await feed.settle()
    assert await feed.stored(reader) == posts[::-1]


async def test_deleted_posts_never_show_again(feed: Feed) -> None:
    author, reader = await feed.user(), await feed.user()
    await feed.apply(followed(feed.tenant, reader, author))
    await feed.build(reader)
    kept, gone = await feed.post(author), await feed.post(author)
    await feed.apply(post_deleted(feed.tenant, gone, author))
    assert await feed.page(reader) == [kept]
    # Created again (a replay, a late duplicate): the projection remembers the deletion.
    await feed.apply(post_created(feed.tenant, gone, author))
    assert await feed.page(reader) == [kept]
    await feed.redis.delete(timeline_key(feed.tenant, reader))
    assert await feed.page(reader) == [kept], "nor from the pull path or a rebuild"


async def test_a_follow_merges_recent_posts_and_an_unfollow_removes_them(feed: Feed) -> None:
    old, new, reader = await feed.user(), await feed.user(), await feed.user()
    await feed.apply(followed(feed.tenant, reader, old))
    await feed.build(reader)
    mine = await feed.post(old)
    theirs = [await feed.post(new) for _ in range(2)]
    assert await feed.page(reader) == [mine]
    await feed.apply(followed(feed.tenant, reader, new))
    assert await feed.page(reader) == sorted([mine, *theirs], reverse=True)
    await feed.apply(unfollowed(feed.tenant, reader, new))
    assert await feed.page(reader) == [mine]


async def test_big_authors_are_merged_at_read_time_not_fanned_out(feed: Feed) -> None:
    big = await feed.user()
    fans = [await feed.user() for _ in range(4)]  # over the threshold of 3
    for fan in fans:
        await feed.build(fan)
        await feed.apply(followed(feed.tenant, fan, big))
    post = await feed.post(big)
    fan = fans[0]
    assert post not in await feed.stored(fan), "no write per follower"
    assert await feed.page(fan) == [post], "merged when the fan reads"
    # Below 90% of the threshold the author is fanned out again, old posts included.
    for other in fans[1:]:
        await feed.apply(unfollowed(feed.tenant, other, big))
    assert post in await feed.stored(fan)
    assert await feed.page(fan) == [post]


async def test_inactive_users_are_not_fanned_out_and_rebuilt_on_return(feed: Feed) -> None:
    author, away = await feed.user(), await feed.user()
    await feed.apply(followed(feed.tenant, away, author))
    await feed.build(away)
    async with feed.db.connection() as conn:
        await conn.execute(
            f"""UPDATE {SCHEMA}.members SET last_active_at = now() - interval '8 days'
                 WHERE tenant_id = $1 AND user_id = $2""",
            feed.tenant,
            away,
        )
    post = await feed.post(author)
    assert post not in await feed.stored(away)
    await feed.redis.delete(timeline_key(feed.tenant, away))  # its TTL ran out meanwhile
    assert await feed.page(away) == [post]
    await feed.settle()
    assert await feed.stored(away) == [post]


async def test_pages_continue_past_the_cap_from_postgres_without_gap_or_repeat(
    feed: Feed,
) -> None:
    author, reader = await feed.user(), await feed.user()
    await feed.apply(followed(feed.tenant, reader, author))
    await feed.build(reader)
    posts = [await feed.post(author) for _ in range(SETTINGS.max_items + 30)]
    assert len(await feed.stored(reader)) == SETTINGS.max_items, "capped"
    seen: list[uuid.UUID] = []
    before = None
    while True:
        page = await feed.page(reader, size=17, before=before)
        if not page:
            break
        seen += page
        before = page[-1]
    assert seen == posts[::-1]


async def test_a_rebuild_of_a_long_history_pages_past_its_floor(feed: Feed) -> None:
    author, reader = await feed.user(), await feed.user()
    await feed.apply(followed(feed.tenant, reader, author))
    posts = [await feed.post(author) for _ in range(SETTINGS.max_items + 5)]
    await feed.build(reader)
    assert len(await feed.stored(reader)) == SETTINGS.max_items
    tail = await feed.page(reader, size=10, before=posts[9])
    assert tail == posts[8::-1]


async def test_redis_down_serves_the_feed_from_postgres(db: Database, feed: Feed) -> None:
    author, reader = await feed.user(), await feed.user()
    await feed.apply(followed(feed.tenant, reader, author))
    post = await feed.post(author)
    broken = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    try:
        metrics = Metrics()
        reader_without_redis = HomeFeed(
            FeedRepository(db), Fanout(broken, SETTINGS).timelines, SETTINGS, meter=metrics.meter
        )
        items = await reader_without_redis.page(feed.tenant, reader, None, 20)
    finally:
        await broken.aclose()
    assert [item.post_id for item in items] == [post]
    assert metrics.total("nova.feed.redis_bypassed") == 1
