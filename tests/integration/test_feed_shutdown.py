"""A feed server stopping waits for the timeline rebuild a read started (within the grace
period), and past the grace period cancels it cleanly: the rebuild's lock is released
either way, so the next read rebuilds at once."""

from __future__ import annotations

import time
import uuid

from grpc import aio

from nova.feed.v1 import feed_pb2, feed_pb2_grpc
from services.feed.service import SPEC as FEED
from services.feed.timelines import timeline_key
from services.runtime.auth import Caller
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.server import start_server
from services.runtime.spec import Dependencies


async def _read_missing_timeline(deps: Dependencies, grace: float) -> tuple[uuid.UUID, float]:
    """Starts a feed server, reads a timeline that does not exist (its rebuild starts in
    the background and sleeps CATCH_UP_DELAY_SECONDS before its second look), then stops
    the server with `grace`; returns the reader and how long the stop took."""
    user = uuid.uuid4()
    token, _ = deps.tokens.issue(Caller(user, DEFAULT_TENANT_ID, f"sd{user.hex[:8]}"))
    server = await start_server(FEED, deps, host="127.0.0.1", port=0)
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        await feed_pb2_grpc.FeedServiceStub(channel).GetHomeFeed(
            feed_pb2.GetHomeFeedRequest(), metadata=(("authorization", f"Bearer {token}"),)
        )
    started = time.monotonic()
    await server.stop(grace)
    return user, time.monotonic() - started


def _lock(user: uuid.UUID) -> str:
    return f"nova:feed:{{{DEFAULT_TENANT_ID}:{user}}}:rebuilding"


async def test_stopping_waits_for_a_rebuild_in_progress(deps: Dependencies) -> None:
    assert deps.redis is not None
    user, took = await _read_missing_timeline(deps, grace=10.0)

    assert took >= 1.0, "the stop waited for the rebuild's second look"
    assert await deps.redis.exists(timeline_key(DEFAULT_TENANT_ID, user)) == 1
    assert await deps.redis.exists(_lock(user)) == 0


async def test_past_the_grace_period_the_rebuild_is_cancelled_and_its_lock_released(
    deps: Dependencies,
) -> None:
    assert deps.redis is not None
    user, took = await _read_missing_timeline(deps, grace=0.2)

    assert took < 1.5
    assert await deps.redis.exists(_lock(user)) == 0
