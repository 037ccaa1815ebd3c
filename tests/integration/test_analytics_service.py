"""AnalyticsService over gRPC on the session's chdb: impressions recorded become views,
domain events (likes, comments) loaded by the analytics consumer group become likes and
comments, trending and active users are read from the materialized views, and bad input
gets a clear error."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from nova.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from nova.content.v1 import content_pb2, content_pb2_grpc
from services.analytics.events import GROUP
from services.registry import REGISTRY
from services.runtime.events.workers import consumer_worker, relay_worker, running_events
from services.runtime.spec import Dependencies
from tests.conftest import NewTenant, SignedIn, SignUp, events_settled, in_tenant

Metrics = dict[str, tuple[int, int, int]]


def _analytics(channels: dict[str, aio.Channel]) -> analytics_pb2_grpc.AnalyticsServiceAsyncStub:
    return analytics_pb2_grpc.AnalyticsServiceStub(channels["analytics"])


@pytest.fixture(scope="module")
async def analytics_events(deps: Dependencies) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """The relay and the analytics consumer group for this module's tests; returns what
    waits until every event written so far is staged for ClickHouse."""
    workers = {
        "relay": relay_worker(REGISTRY.outbox_schemas, deps.config.events),
        GROUP: consumer_worker(REGISTRY.consumers[GROUP], REGISTRY.topics, deps.config),
    }
    async with running_events(deps.db, deps.config.events, workers):
        yield lambda: events_settled(deps.db, GROUP)


async def _metrics(channels: dict[str, aio.Channel], who: SignedIn, post_ids: list[str]) -> Metrics:
    answer = await _analytics(channels).BatchGetPostMetrics(
        analytics_pb2.BatchGetPostMetricsRequest(post_ids=post_ids), metadata=who.metadata
    )
    return {m.post_id: (m.views, m.likes, m.comments) for m in answer.metrics}


async def _eventually(
    channels: dict[str, aio.Channel], who: SignedIn, expected: Metrics, seconds: float = 15
) -> Metrics:
    """The metrics once they equal `expected` (the batcher writes within about a second),
    or what they were when time ran out."""
    seen: Metrics = {}
    for _ in range(int(seconds / 0.1)):
        seen = await _metrics(channels, who, list(expected))
        if seen == expected:
            return seen
        await asyncio.sleep(0.1)
    return seen


def _impressions(
    post_ids: list[str], dwell_ms: int = 500
) -> analytics_pb2.RecordImpressionsRequest:
    return analytics_pb2.RecordImpressionsRequest(
        impressions=[analytics_pb2.Impression(post_id=p, dwell_ms=dwell_ms) for p in post_ids]
    )


async def test_impressions_likes_and_comments_become_metrics_trending_and_active_users(
    sign_up: SignUp,
    channels: dict[str, aio.Channel],
    deps: Dependencies,
    analytics_events: Callable[[], Awaitable[None]],
    new_tenant: NewTenant,
) -> None:
    content = content_pb2_grpc.ContentServiceStub(channels["content"])
    # A tenant of their own: the session's other posts and users would crowd the ranking
    # and the count.
    tenant = await new_tenant()
    author, fan, lurker = [
        in_tenant(deps.tokens, await sign_up(prefix), tenant) for prefix in ("aa", "af", "al")
    ]
    posts = [
        (
            await content.CreatePost(
                content_pb2.CreatePostRequest(text=f"metrics {i}"), metadata=author.metadata
            )
        ).post.id
        for i in range(3)
    ]
    hot, warm, cold = posts
    analytics = _analytics(channels)
    answered = await analytics.RecordImpressions(
        _impressions([hot, hot, hot, warm, warm, cold]), metadata=fan.metadata
    )
    assert answered.accepted == 6
    await analytics.RecordImpressions(_impressions([hot, cold]), metadata=lurker.metadata)
    await content.LikePost(content_pb2.LikePostRequest(post_id=hot), metadata=fan.metadata)
    await content.LikePost(content_pb2.LikePostRequest(post_id=warm), metadata=fan.metadata)
    await content.LikePost(content_pb2.LikePostRequest(post_id=warm), metadata=lurker.metadata)
    await content.UnlikePost(content_pb2.UnlikePostRequest(post_id=warm), metadata=lurker.metadata)
    await content.CreateComment(
        content_pb2.CreateCommentRequest(post_id=cold, text="first!"), metadata=fan.metadata
    )
    await analytics_events()

    expected = {hot: (4, 1, 0), warm: (2, 1, 0), cold: (2, 0, 1)}
    assert await _eventually(channels, fan, expected) == expected
    unknown = str(uuid.uuid4())
    assert await _metrics(channels, fan, [unknown, hot]) == {
        unknown: (0, 0, 0),
        hot: (4, 1, 0),
    }, "one entry per asked id, in order, zeros for a post with nothing"

    trending = await analytics.GetTrendingPosts(
        analytics_pb2.GetTrendingPostsRequest(window_seconds=3600, limit=100),
        metadata=fan.metadata,
    )
    ours = [p.post_id for p in trending.posts]
    # Scores: hot 4 + 5 = 9, cold 2 + 10 = 12, warm 2 + 5 = 7.
    assert ours == [cold, hot, warm]
    top = await analytics.GetTrendingPosts(
        analytics_pb2.GetTrendingPostsRequest(limit=1), metadata=fan.metadata
    )
    assert len(top.posts) == 1

    active = await analytics.GetActiveUsers(
        analytics_pb2.GetActiveUsersRequest(window_seconds=3600), metadata=fan.metadata
    )
    # The author posted, the fan and the lurker viewed and liked: all three.
    assert active.active_users == 3


async def test_old_impressions_count_in_totals_but_not_in_a_short_trending_window(
    sign_up: SignUp, channels: dict[str, aio.Channel]
) -> None:
    viewer = await sign_up("ao")
    post = str(uuid.uuid4())
    earlier = Timestamp()
    earlier.FromDatetime(datetime.now(UTC) - timedelta(hours=3))
    await _analytics(channels).RecordImpressions(
        analytics_pb2.RecordImpressionsRequest(
            impressions=[analytics_pb2.Impression(post_id=post, viewed_at=earlier)] * 5
        ),
        metadata=viewer.metadata,
    )
    assert await _eventually(channels, viewer, {post: (5, 0, 0)}) == {post: (5, 0, 0)}
    analytics = _analytics(channels)
    last_hour = await analytics.GetTrendingPosts(
        analytics_pb2.GetTrendingPostsRequest(window_seconds=3600, limit=100),
        metadata=viewer.metadata,
    )
    assert post not in {p.post_id for p in last_hour.posts}
    last_day = await analytics.GetTrendingPosts(
        analytics_pb2.GetTrendingPostsRequest(window_seconds=86400, limit=100),
        metadata=viewer.metadata,
    )
    assert post in {p.post_id for p in last_day.posts}


async def test_an_anonymous_caller_cannot_record_impressions(
    channels: dict[str, aio.Channel],
) -> None:
    with pytest.raises(aio.AioRpcError) as refused:
        await _analytics(channels).RecordImpressions(_impressions([str(uuid.uuid4())]))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "needs a signed-in user" in (refused.value.details() or "")


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


_POST = str(uuid.uuid4())


@pytest.mark.parametrize(
    ("call", "request_message", "message"),
    [
        ("RecordImpressions", analytics_pb2.RecordImpressionsRequest(), "send 1 to 1000 a call"),
        (
            "RecordImpressions",
            _impressions([_POST] * 1001),
            "impressions has 1001; send 1 to 1000 a call",
        ),
        (
            "RecordImpressions",
            _impressions([_POST, "not-a-uuid"]),
            "impressions[1].post_id must be a UUID, got 'not-a-uuid'",
        ),
        ("RecordImpressions", _impressions([""]), "impressions[0].post_id is required"),
        (
            "RecordImpressions",
            _impressions([_POST], dwell_ms=-1),
            "impressions[0].dwell_ms is -1; it must be 0 to 3600000",
        ),
        (
            "RecordImpressions",
            analytics_pb2.RecordImpressionsRequest(
                impressions=[
                    analytics_pb2.Impression(
                        post_id=_POST,
                        viewed_at=_timestamp(datetime.now(UTC) + timedelta(hours=1)),
                    )
                ]
            ),
            "not in the future",
        ),
        (
            "RecordImpressions",
            analytics_pb2.RecordImpressionsRequest(
                impressions=[
                    analytics_pb2.Impression(
                        post_id=_POST, viewed_at=_timestamp(datetime.now(UTC) - timedelta(days=8))
                    )
                ]
            ),
            "within the last 7 days",
        ),
        (
            "RecordImpressions",
            analytics_pb2.RecordImpressionsRequest(
                impressions=[analytics_pb2.Impression(post_id=_POST, viewed_at=Timestamp(nanos=-1))]
            ),
            "impressions[0].viewed_at is not a valid timestamp (seconds 0, nanos -1)",
        ),
        (
            "BatchGetPostMetrics",
            analytics_pb2.BatchGetPostMetricsRequest(post_ids=[str(uuid.uuid4())] * 101),
            "post_ids has 101 ids; at most 100 are allowed",
        ),
        (
            "BatchGetPostMetrics",
            analytics_pb2.BatchGetPostMetricsRequest(post_ids=["nope"]),
            "post_ids[0] must be a UUID",
        ),
        (
            "BatchGetPostMetrics",
            analytics_pb2.BatchGetPostMetricsRequest(),
            "post_ids must name at least one id",
        ),
        (
            "GetTrendingPosts",
            analytics_pb2.GetTrendingPostsRequest(window_seconds=-1),
            "window_seconds must not be negative, got -1",
        ),
        (
            "GetTrendingPosts",
            analytics_pb2.GetTrendingPostsRequest(window_seconds=7 * 86400 + 1),
            "window_seconds is 604801; at most 604800 is allowed",
        ),
        (
            "GetTrendingPosts",
            analytics_pb2.GetTrendingPostsRequest(limit=101),
            "limit is 101; at most 100 is allowed",
        ),
        (
            "GetTrendingPosts",
            analytics_pb2.GetTrendingPostsRequest(limit=-5),
            "limit must not be negative",
        ),
        (
            "GetActiveUsers",
            analytics_pb2.GetActiveUsersRequest(window_seconds=-3600),
            "window_seconds must not be negative",
        ),
        (
            "GetActiveUsers",
            analytics_pb2.GetActiveUsersRequest(window_seconds=31 * 86400),
            "at most 2592000 is allowed",
        ),
    ],
)
async def test_bad_input_is_invalid_argument_with_what_to_fix(
    sign_up: SignUp,
    channels: dict[str, aio.Channel],
    call: str,
    request_message: object,
    message: str,
) -> None:
    caller = await sign_up("ab")
    with pytest.raises(aio.AioRpcError) as refused:
        await getattr(_analytics(channels), call)(request_message, metadata=caller.metadata)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (refused.value.details() or "")


async def test_a_thousand_impressions_are_accepted_at_once(
    sign_up: SignUp, channels: dict[str, aio.Channel]
) -> None:
    viewer = await sign_up("am")
    posts = [str(uuid.uuid4()) for _ in range(100)]
    answered = await _analytics(channels).RecordImpressions(
        _impressions(posts * 10), metadata=viewer.metadata
    )
    assert answered.accepted == 1000
    expected = {post: (10, 0, 0) for post in posts}
    assert await _eventually(channels, viewer, expected) == expected
