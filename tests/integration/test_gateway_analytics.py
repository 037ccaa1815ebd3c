"""The gateway over the analytics service: impressions recorded through the mutation become
view counts, a feed page's view counts cost one batch RPC, trending posts come in
engagement order without deleted ones, and bad or anonymous calls are refused before any
RPC; with analytics down or full, the rest of the page still answers."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import pytest
from grpc import aio

from gateway.clients import Target
from gateway.resolvers.analytics import MAX_IMPRESSIONS
from gateway.settings import GatewaySettings
from nova.content.v1 import content_pb2, content_pb2_grpc
from nova.user.v1 import user_pb2, user_pb2_grpc
from services.registry import REGISTRY
from services.runtime.analytics_settings import AnalyticsSettings
from services.runtime.process import serve
from services.runtime.spec import Dependencies
from tests.conftest import EventsSettled, NewTenant, SignedIn, SignUp, in_tenant
from tests.integration.test_gateway_feed import FEED_QUERY, FEED_RPCS, Gateway, open_gateway

RECORD = """mutation($ids: [ID!]!, $dwell: Int) {
  recordImpressions(postIds: $ids, dwellMs: $dwell) { accepted }
}"""
VIEWS = "query($n: Int!) { homeFeed(first: $n) { edges { node { id viewCount } } } }"
FEED_WITH_VIEWS = FEED_QUERY.replace("viewerHasLiked", "viewerHasLiked viewCount")
TRENDING = """query($window: Int, $first: Int) {
  trendingPosts(windowSeconds: $window, first: $first) { id text viewCount }
}"""
POSTS_PER_AUTHOR = 12
FLUSH_TIMEOUT_SECONDS = 15.0
"""How long a test waits for impressions to reach ClickHouse (about a second, usually)."""


@pytest.fixture(scope="module")
async def gateway(targets: dict[str, Target]) -> AsyncIterator[Gateway]:
    async with open_gateway(targets, GatewaySettings()) as opened:
        yield opened


@dataclass(frozen=True)
class Followed:
    viewer: SignedIn
    """Follows two authors of 12 posts each: a home feed of 24."""


def content_of(channels: dict[str, aio.Channel]) -> content_pb2_grpc.ContentServiceAsyncStub:
    return content_pb2_grpc.ContentServiceStub(channels["content"])


async def create_posts(
    channels: dict[str, aio.Channel], author: SignedIn, count: int, label: str = "post"
) -> list[str]:
    content = content_of(channels)
    created = await asyncio.gather(
        *(
            content.CreatePost(
                content_pb2.CreatePostRequest(text=f"{label} {i}"), metadata=author.metadata
            )
            for i in range(count)
        )
    )
    return [response.post.id for response in created]


@pytest.fixture(scope="module")
async def followed(
    sign_up: SignUp, channels: dict[str, aio.Channel], feed_events: EventsSettled
) -> Followed:
    """A viewer following two authors of 12 posts each, once the posts are in the feed."""
    users = user_pb2_grpc.UserServiceStub(channels["user"])
    viewer, *authors = await asyncio.gather(*(sign_up("ga") for _ in range(3)))
    for author in authors:
        await users.Follow(user_pb2.FollowRequest(user_id=author.user.id), metadata=viewer.metadata)
    for author in authors:
        await create_posts(channels, author, POSTS_PER_AUTHOR)
    await feed_events()
    return Followed(viewer)


async def feed_ids(gateway: Gateway, viewer: SignedIn, first: int) -> list[str]:
    body = await gateway.query(VIEWS, {"n": first}, token=viewer.token)
    assert "errors" not in body, body["errors"]
    return [edge["node"]["id"] for edge in body["data"]["homeFeed"]["edges"]]


async def eventually(
    ask: Callable[[], Any], done: Callable[[Any], bool], seconds: float = FLUSH_TIMEOUT_SECONDS
) -> Any:
    """What `ask` answers once `done` says so (impressions reach ClickHouse in batches),
    or its last answer when time runs out."""
    answer = await ask()
    for _ in range(int(seconds / 0.1)):
        if done(answer):
            break
        await asyncio.sleep(0.1)
        answer = await ask()
    return answer


def code_of(body: dict[str, Any]) -> str:
    codes = {str(error["extensions"]["code"]) for error in body["errors"]}
    assert len(codes) == 1, body
    return codes.pop()


async def test_impressions_recorded_through_the_mutation_become_view_counts(
    gateway: Gateway, followed: Followed
) -> None:
    viewer = followed.viewer
    seen, glimpsed, *unseen = await feed_ids(gateway, viewer, 20)

    recorded = await gateway.query(
        RECORD, {"ids": [seen, seen, glimpsed, seen], "dwell": 1200}, token=viewer.token
    )

    assert "errors" not in recorded, recorded["errors"]
    assert recorded["data"] == {"recordImpressions": {"accepted": 4}}

    async def views() -> dict[str, Any]:
        body = await gateway.query(VIEWS, {"n": 20}, token=viewer.token)
        assert "errors" not in body, body["errors"]
        return {
            edge["node"]["id"]: edge["node"]["viewCount"]
            for edge in body["data"]["homeFeed"]["edges"]
        }

    expected = {seen: 3, glimpsed: 1} | dict.fromkeys(unseen, 0)
    assert await eventually(views, lambda counts: counts == expected) == expected


async def test_view_counts_on_a_20_post_feed_page_cost_exactly_one_more_rpc(
    gateway: Gateway, followed: Followed
) -> None:
    token = followed.viewer.token
    without = await gateway.query(FEED_QUERY, {"first": 20}, token=token)
    assert "errors" not in without, without["errors"]
    assert gateway.recorder.methods() == FEED_RPCS

    before = gateway.counter.total
    body = await gateway.query(FEED_WITH_VIEWS, {"first": 20}, token=token)

    assert "errors" not in body, body["errors"]
    edges = body["data"]["homeFeed"]["edges"]
    assert len(edges) == 20
    assert all(isinstance(edge["node"]["viewCount"], int) for edge in edges)
    assert gateway.recorder.methods() == {**FEED_RPCS, "BatchGetPostMetrics": 1}
    assert gateway.counter.total - before == sum(FEED_RPCS.values()) + 1
    assert gateway.recorder.ids("BatchGetPostMetrics") == [edge["node"]["id"] for edge in edges]


async def test_view_counts_of_two_lists_are_at_most_a_batch_each_of_at_most_100_ids(
    gateway: Gateway, sign_up: SignUp, channels: dict[str, aio.Channel]
) -> None:
    # Each list's posts reach their fields in one tick; the two lists' may share one, and
    # then their 150 ids go out as 100 and 50 (BatchGetPostMetrics takes at most 100).
    authors = await asyncio.gather(sign_up("gb"), sign_up("gb"))
    posts = [post for author in authors for post in await create_posts(channels, author, 75)]
    query = """query($a: ID!, $b: ID!) {
      a: userPosts(userId: $a, first: 100) { edges { node { id viewCount } } }
      b: userPosts(userId: $b, first: 100) { edges { node { id viewCount } } }
    }"""

    body = await gateway.query(query, {"a": authors[0].user.id, "b": authors[1].user.id})

    assert "errors" not in body, body["errors"]
    counts = {
        edge["node"]["id"]: edge["node"]["viewCount"]
        for alias in ("a", "b")
        for edge in body["data"][alias]["edges"]
    }
    assert counts == dict.fromkeys(posts, 0)
    batches = [
        len(request.post_ids)
        for method, request in gateway.recorder.requests
        if method == "BatchGetPostMetrics"
    ]
    assert sorted(batches) in ([75, 75], [50, 100])
    assert sorted(gateway.recorder.ids("BatchGetPostMetrics")) == sorted(posts)


async def test_trending_posts_come_most_engaging_first_without_deleted_ones(
    gateway: Gateway,
    sign_up: SignUp,
    channels: dict[str, aio.Channel],
    deps: Dependencies,
    new_tenant: NewTenant,
) -> None:
    # A tenant of their own: the session's other posts would crowd the ranking.
    tenant = await new_tenant()
    author = in_tenant(deps.tokens, await sign_up("gt"), tenant)
    viewer = in_tenant(deps.tokens, await sign_up("gt"), tenant)
    hot, warm, cold, gone = await create_posts(channels, author, 4, "trending")
    await gateway.query(
        RECORD, {"ids": [hot] * 6 + [warm] * 4 + [cold] * 2 + [gone] * 8}, token=viewer.token
    )
    await content_of(channels).DeletePost(
        content_pb2.DeletePostRequest(id=gone), metadata=author.metadata
    )
    ours = {hot, warm, cold}

    async def trending() -> list[dict[str, Any]]:
        body = await gateway.query(TRENDING, {"window": 3600, "first": 100}, token=viewer.token)
        assert "errors" not in body, body["errors"]
        posts: list[dict[str, Any]] = body["data"]["trendingPosts"]
        return [post for post in posts if post["id"] in ours]

    found = await eventually(trending, lambda posts: len(posts) == len(ours))

    assert [(post["id"], post["viewCount"]) for post in found] == [(hot, 6), (warm, 4), (cold, 2)]
    assert found[0]["text"] == "trending 0"
    # The deleted post was among the service's answer, and left out; viewCount is the
    # posts' total, one BatchGetPostMetrics (the answer's counts are the window's).
    assert gone in gateway.recorder.ids("BatchGetPosts")
    assert gateway.recorder.methods() == {
        "GetTrendingPosts": 1,
        "BatchGetPosts": 1,
        "BatchGetPostMetrics": 1,
    }


async def test_anonymous_impressions_are_unauthenticated_without_an_rpc(gateway: Gateway) -> None:
    before = gateway.counter.total
    body = await gateway.query(RECORD, {"ids": [str(uuid.uuid4())]})

    assert body["data"] is None
    assert code_of(body) == "UNAUTHENTICATED"
    assert gateway.counter.total == before


@pytest.mark.parametrize(
    ("query", "variables", "message"),
    [
        (TRENDING, {"window": -1}, "windowSeconds must be 1 to 604800 (7 days), got -1"),
        (TRENDING, {"window": 0}, "windowSeconds must be 1 to 604800 (7 days), got 0"),
        (TRENDING, {"window": 7 * 86400 + 1}, "got 604801"),
        (RECORD, {"ids": []}, "postIds lists 0 posts; send 1 to 1000 in one call"),
        (RECORD, {"ids": [str(uuid.uuid4()), "nope"]}, "postIds must be an id, got 'nope'"),
        (RECORD, {"ids": [str(uuid.uuid4())], "dwell": -1}, "dwellMs must be 0 to 3600000"),
        (RECORD, {"ids": [str(uuid.uuid4())], "dwell": 3_600_001}, "(an hour), got 3600001"),
    ],
)
async def test_bad_arguments_are_bad_user_input_without_an_rpc(
    gateway: Gateway, followed: Followed, query: str, variables: dict[str, Any], message: str
) -> None:
    before = gateway.counter.total
    body = await gateway.query(query, variables, token=followed.viewer.token)

    assert body["data"] is None
    assert code_of(body) == "BAD_USER_INPUT"
    assert message in body["errors"][0]["message"]
    assert gateway.counter.total == before


async def test_trending_first_over_100_is_refused_like_every_page_size(gateway: Gateway) -> None:
    body = await gateway.query(TRENDING, {"first": 101})

    assert "data" not in body
    assert body["errors"][0]["extensions"] == {
        "code": "QUERY_LIMIT_EXCEEDED",
        "limit": "maxPageSize",
        "value": 101,
        "maximum": 100,
    }


async def test_a_thousand_impressions_are_one_call_and_one_more_is_bad_user_input(
    gateway: Gateway, followed: Followed
) -> None:
    # 1001 variable values for 1000 ids: the default maxVariableValues (1100) admits them.
    post = str(uuid.uuid4())
    token = followed.viewer.token
    accepted = await gateway.query(RECORD, {"ids": [post] * MAX_IMPRESSIONS}, token=token)
    assert accepted["data"] == {"recordImpressions": {"accepted": MAX_IMPRESSIONS}}

    before = gateway.counter.total
    refused = await gateway.query(RECORD, {"ids": [post] * (MAX_IMPRESSIONS + 1)}, token=token)
    assert code_of(refused) == "BAD_USER_INPUT"
    assert refused["errors"][0]["message"] == (
        "postIds lists 1001 posts; send 1 to 1000 in one call"
    )
    assert gateway.counter.total == before


def dead_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


async def test_with_analytics_down_the_feed_answers_all_but_its_view_counts(
    targets: dict[str, Target], followed: Followed
) -> None:
    down = {**targets, "analytics": replace(targets["analytics"], address=dead_address())}
    async with open_gateway(down, GatewaySettings(request_timeout_seconds=5)) as gateway:
        body = await gateway.query(FEED_WITH_VIEWS, {"first": 20}, token=followed.viewer.token)
        # Asked once for the page, not again by each field.
        assert gateway.recorder.methods() == {**FEED_RPCS, "BatchGetPostMetrics": 1}
        trending = await gateway.query(TRENDING, {})

    edges = body["data"]["homeFeed"]["edges"]
    assert len(edges) == 20
    for edge in edges:
        node = edge["node"]
        assert node["viewCount"] is None
        assert node["author"]["handle"]
        assert node["likeCount"] == 0
    assert code_of(body) == "UNAVAILABLE"
    assert sorted(error["path"][2] for error in body["errors"]) == list(range(20))
    assert {tuple(error["path"][-1:]) for error in body["errors"]} == {("viewCount",)}
    assert trending["data"] is None
    assert code_of(trending) == "UNAVAILABLE"


@asynccontextmanager
async def analytics_server(deps: Dependencies, settings: AnalyticsSettings) -> AsyncIterator[str]:
    """An analytics service of its own (the session's database and ClickHouse, a flusher
    beside the session's), with these settings; yields its address."""
    own = replace(deps, config=replace(deps.config, analytics=settings))
    async with serve(own, [REGISTRY.services["analytics"]], ports={"analytics": 0}) as (server,):
        yield f"127.0.0.1:{server.port}"


async def test_a_full_analytics_service_is_resource_exhausted_with_its_retry_hint(
    deps: Dependencies, targets: dict[str, Target], followed: Followed
) -> None:
    # Admits one waiting impression; asks to retry after twice its flush interval (3 s).
    settings = replace(deps.config.analytics, max_backlog_rows=1, flush_interval_seconds=1.5)
    post = str(uuid.uuid4())
    async with analytics_server(deps, settings) as address:
        full = {**targets, "analytics": replace(targets["analytics"], address=address)}
        async with open_gateway(full, GatewaySettings()) as gateway:
            body = await gateway.query(RECORD, {"ids": [post, post]}, token=followed.viewer.token)

    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"] == {"code": "RESOURCE_EXHAUSTED", "retryAfterSeconds": 3}
    assert error["message"].startswith("analytics has ")
    assert error["message"].endswith("impressions waiting to be written (at most 1); retry later")
