"""Reading a home feed: the stored timeline, the big authors merged in, and PostgreSQL
wherever Redis has nothing to say — so a page is never empty by accident and the feed has
no dead end.

- Stored timeline (the common case): one Redis round trip (timelines.py's read script)
  returns the page, the timeline's size and the big authors the user follows.
- Big authors (not fanned out): their newest posts before the cursor come from the
  projection (one query over their index), merged with the stored page.
- Missing timeline (new or returning user, expired, evicted, Redis flushed or restarted):
  this page comes from the pull path (the same posts the timeline would hold, read from
  the projections), and the timeline is rebuilt in the background. Concurrent readers of
  one missing timeline share one pull (SingleFlight) and one rebuild (one per user in a
  process, and a Redis lock across processes).
- Past the cap: a page that runs past the oldest stored post of a full timeline continues
  from PostgreSQL with the same cursor (a post id), so scrolling never ends at 800.
- Redis down or slow: the pull path serves the page, counted in
  `nova.feed.redis_bypassed`; never an error to the caller.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from opentelemetry import metrics
from redis.exceptions import RedisError

from services.feed.repository import FeedRepository
from services.feed.timelines import Item, Timelines, score_of
from services.runtime.feed_settings import FeedSettings
from services.runtime.pagination import NEWEST_CURSOR
from services.runtime.single_flight import SingleFlight

_log = structlog.get_logger("nova.feed")

TIE_SLACK = 16
"""Extra items read past the page: posts of the same millisecond as the cursor."""
CATCH_UP_DELAY_SECONDS = 2.0
"""A post committed while a rebuild read PostgreSQL is added by a second look this much
later (its fan-out found no timeline to write to)."""
REBUILD_LOCK_MS = 30_000
_PAGES_KEPT = 8
"""Pulled pages kept per user while the timeline is rebuilt (different cursors)."""

UserKey = tuple[uuid.UUID, uuid.UUID]


@dataclass
class HomeFeed:
    repository: FeedRepository
    timelines: Timelines
    settings: FeedSettings
    meter: metrics.Meter | None = None
    pulls: SingleFlight[tuple[uuid.UUID, uuid.UUID, uuid.UUID, int], list[Item]] = field(
        default_factory=SingleFlight
    )
    _background: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)
    _rebuilding: dict[UserKey, dict[tuple[uuid.UUID, int], list[Item]]] = field(
        default_factory=dict, init=False, repr=False
    )
    """Users whose timeline is being rebuilt, with the pages pulled meanwhile."""
    _rebuilds_done: int = field(default=0, init=False, repr=False)
    rebuilds_started: int = field(default=0, init=False)
    """Rebuilds this process started (one per missing timeline, however many read it)."""

    def __post_init__(self) -> None:
        meter = self.meter if self.meter is not None else metrics.get_meter("nova.feed")
        self._bypassed = meter.create_counter(
            "nova.feed.redis_bypassed",
            unit="{read}",
            description="Home feed reads served from PostgreSQL because Redis failed.",
        )
        self._missing = meter.create_counter(
            "nova.feed.timeline_missing",
            unit="{read}",
            description="Home feed reads that found no timeline (served by the pull path).",
        )

    async def page(
        self, tenant: uuid.UUID, user: uuid.UUID, before: uuid.UUID | None, size: int
    ) -> list[Item]:
        """Up to size + 1 items older than `before`, newest first (the extra one says that
        another page exists)."""
        want = size + 1
        floor = before or NEWEST_CURSOR
        try:
            done = self._rebuilds_done
            stored = await self._stored(tenant, user, before, want)
            if stored is None and self._rebuilds_done != done:
                # A rebuild finished while this read was on its way: look again rather
                # than pull what the timeline now holds.
                stored = await self._stored(tenant, user, before, want)
        except RedisError as error:
            self._bypassed.add(1)
            _log.warning("redis failed; feed read from postgres", error=str(error))
            return await self._pull(tenant, user, floor, want)
        if stored is None:
            self._missing.add(1)
            if (tenant, user) not in self._rebuilding:
                self._rebuilding[(tenant, user)] = {}
                self._in_background(self._rebuild(tenant, user))
            return await self._pull(tenant, user, floor, want)
        items, complete, big, first_read = stored
        if first_read:
            self._in_background(self.repository.touch(tenant, user))
        if not complete:
            # The page runs past the oldest stored post of a full timeline: the rest, all
            # authors included, comes from PostgreSQL, after the last stored one.
            last = items[-1].post_id if items else floor
            rest = await self.repository.pull(tenant, user, last, want - len(items))
            newer_big = [
                item
                for item in await self.repository.by_authors(tenant, big, floor, want)
                if item.post_id > last
            ]
            return _merged(items, rest, newer_big)[:want]
        if big:
            return _merged(items, await self.repository.by_authors(tenant, big, floor, want))[:want]
        return items

    async def _stored(
        self, tenant: uuid.UUID, user: uuid.UUID, before: uuid.UUID | None, want: int
    ) -> tuple[list[Item], bool, list[uuid.UUID], bool] | None:
        """(items older than `before`, whether they reach `want` or the timeline's end,
        big authors, first read this hour); None when there is no timeline."""
        count = want + TIE_SLACK
        while True:
            read = await self.timelines.read(
                tenant, user, None if before is None else score_of(before), count
            )
            if read is None:
                return None
            items = [i for i in read.items if before is None or i.post_id < before][:want]
            exhausted = len(read.items) < count  # nothing older is stored above the floor
            if len(items) == want or exhausted:
                complete = len(items) == want or read.floor_ms == 0
                return items, complete, read.big_authors, read.first_read_this_hour
            count *= 4  # more posts of one millisecond than the slack: read further

    async def _pull(
        self, tenant: uuid.UUID, user: uuid.UUID, before: uuid.UUID, want: int
    ) -> list[Item]:
        """The page from the projections. While the user's timeline is being rebuilt, a
        page pulled once serves every reader who asks for it until the rebuild is done
        (they would all miss the timeline, and pull the same rows)."""
        pulled = self._rebuilding.get((tenant, user))
        if pulled is not None and (before, want) in pulled:
            return pulled[(before, want)]

        async def load() -> list[Item]:
            items = await self.repository.pull(tenant, user, before, want)
            # Kept before the shared load ends, so no caller arrives in between.
            pulled = self._rebuilding.get((tenant, user))
            if pulled is not None and len(pulled) < _PAGES_KEPT:
                pulled[(before, want)] = items
            return items

        return await self.pulls.run((tenant, user, before, want), load)

    async def _rebuild(self, tenant: uuid.UUID, user: uuid.UUID) -> None:
        # One per user at a time in this process: readers who miss while it runs find the
        # user in _rebuilding and do not start another.
        self.rebuilds_started += 1
        try:
            await self._rebuild_now(tenant, user)
        finally:
            self._rebuilding.pop((tenant, user), None)
            self._rebuilds_done += 1

    async def _rebuild_now(self, tenant: uuid.UUID, user: uuid.UUID) -> None:
        """The timeline from the projections, once across processes (a Redis lock); then
        a second look for posts committed while it was read."""
        lock = f"nova:feed:{{{tenant}:{user}}}:rebuilding"
        redis = self.timelines.redis
        if not await redis.set(lock, 1, nx=True, px=REBUILD_LOCK_MS):
            return
        try:
            await self.repository.touch(tenant, user)  # back, or new: fan-out reaches them
            big = await self.repository.big_followees(tenant, user)
            items = await self.repository.fanned_out(tenant, user, self.settings.max_items)
            complete = len(items) < self.settings.max_items
            await self.timelines.replace(tenant, user, items, big, complete=complete)
            _log.info("timeline rebuilt", tenant=str(tenant), user=str(user), items=len(items))
            await asyncio.sleep(CATCH_UP_DELAY_SECONDS)
            recent = await self.repository.fanned_out(tenant, user, TIE_SLACK * 4)
            async with redis.pipeline(transaction=False) as pipe:
                await self.timelines.add(pipe, tenant, [user], recent)
                await pipe.execute()
        finally:
            await redis.delete(lock)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs `work` without making the reader wait; failures are logged (a rebuild
        that failed is tried again by the next read of the missing timeline)."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            _log.warning("feed background work failed", error=f"{type(error).__name__}: {error}")

    async def close(self) -> None:
        """Waits for background work (rebuilds, activity) to finish, at shutdown; if this
        wait is cancelled (past the grace period), so is the work (gather's rule): a
        rebuild cut short leaves no timeline, which the next read rebuilds."""
        try:
            while self._background:
                await asyncio.gather(*self._background, return_exceptions=True)
        except asyncio.CancelledError:
            # The work is cancelled too: let it release its rebuild lock before going.
            if self._background:
                await asyncio.wait(list(self._background), timeout=1.0)
            raise


def _merged(*parts: Iterable[Item]) -> list[Item]:
    """Newest first, each post once."""
    seen: dict[uuid.UUID, Item] = {}
    for part in parts:
        for item in part:
            seen.setdefault(item.post_id, item)
    return sorted(seen.values(), key=lambda item: item.post_id, reverse=True)
