"""View counts through the loaders, against stand-in stubs that record each call: one
BatchGetPostMetrics per 100 ids, a feed page's sent beside its posts and holding up no
other call, and a failed one failing only the view counts, without being asked again."""

from __future__ import annotations

import asyncio
import time
from operator import attrgetter
from typing import Any

import grpc
import pytest
from grpc import aio

from gateway.clients import Backend, Clients, RpcCounter
from gateway.errors import BackendError
from gateway.loaders import Loaders, settled
from nova.analytics.v1 import analytics_pb2
from nova.content.v1 import content_pb2
from nova.user.v1 import user_pb2

WAIT_SECONDS = 2.0
"""How long a stub waits for the call it expects to be in flight beside its own."""


def unavailable() -> aio.AioRpcError:
    return aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, aio.Metadata(), aio.Metadata(), "down", None
    )


class FakeAnalytics:
    """Answers each post's views as the length of its id; `failing` answers UNAVAILABLE,
    and `after` is a call it waits to see made first."""

    def __init__(self, *, failing: bool = False, after: asyncio.Event | None = None) -> None:
        self.failing = failing
        self.after = after
        self.calls: list[list[str]] = []
        self.called = asyncio.Event()

    async def BatchGetPostMetrics(
        self, request: analytics_pb2.BatchGetPostMetricsRequest, **options: Any
    ) -> analytics_pb2.BatchGetPostMetricsResponse:
        self.calls.append(list(request.post_ids))
        self.called.set()
        if self.after is not None:
            await asyncio.wait_for(self.after.wait(), WAIT_SECONDS)
        if self.failing:
            raise unavailable()
        return analytics_pb2.BatchGetPostMetricsResponse(
            metrics=[analytics_pb2.PostMetrics(post_id=i, views=len(i)) for i in request.post_ids]
        )


class FakeContent:
    """Answers BatchGetPosts once `after` (a call it waits to see made first) is set."""

    def __init__(self, after: asyncio.Event | None = None) -> None:
        self.after = after

    async def BatchGetPosts(
        self, request: content_pb2.BatchGetPostsRequest, **options: Any
    ) -> content_pb2.BatchGetPostsResponse:
        if self.after is not None:
            await asyncio.wait_for(self.after.wait(), WAIT_SECONDS)
        return content_pb2.BatchGetPostsResponse(
            posts=[content_pb2.Post(id=i, author_id=f"author of {i}") for i in request.ids]
        )


class FakeUsers:
    def __init__(self) -> None:
        self.called = asyncio.Event()

    async def BatchGetUsers(
        self, request: user_pb2.BatchGetUsersRequest, **options: Any
    ) -> user_pb2.BatchGetUsersResponse:
        self.called.set()
        return user_pb2.BatchGetUsersResponse(users=[user_pb2.User(id=i) for i in request.ids])


def loaders_over(
    analytics: FakeAnalytics, content: FakeContent | None = None, users: FakeUsers | None = None
) -> Loaders:
    stubs = {"user": users, "content": content, "feed": None, "analytics": analytics}
    clients = Clients(stubs=stubs, counter=RpcCounter())
    return Loaders(Backend(clients, authorization=None, deadline=time.monotonic() + 5))


_views = attrgetter("views")


async def page_of(loaders: Loaders, ids: list[str], *, views: bool) -> None:
    await loaders.page(ids, stats=False, comments=(), authors=True, commenters=False, views=views)


async def test_view_counts_of_one_tick_are_one_call_per_100_ids_in_request_order() -> None:
    analytics = FakeAnalytics()
    loaders = loaders_over(analytics)
    ids = [f"p{i}" for i in range(250)]

    found = await asyncio.gather(*(loaders.metrics.load(i) for i in [*ids, *ids]))

    assert [metrics.post_id for metrics in found] == [*ids, *ids]
    assert [metrics.views for metrics in found] == [len(i) for i in [*ids, *ids]]
    assert [len(batch) for batch in analytics.calls] == [100, 100, 50]
    assert [i for batch in analytics.calls for i in batch] == ids


async def test_a_page_asks_for_its_view_counts_beside_its_posts_and_before_its_authors() -> None:
    # BatchGetPosts answers only once BatchGetPostMetrics is in flight, and
    # BatchGetPostMetrics only once BatchGetUsers is: sent one after the other, either
    # would wait in vain.
    users = FakeUsers()
    analytics = FakeAnalytics(after=users.called)
    loaders = loaders_over(analytics, FakeContent(after=analytics.called), users)
    ids = [f"p{i}" for i in range(20)]

    await page_of(loaders, [*ids, ids[0]], views=True)

    assert analytics.calls == [ids], "one call, each id once"
    # Every view count is there when the page's fields resolve: a plain value.
    assert [settled(loaders.metrics.load(i), _views) for i in ids] == [len(i) for i in ids]
    assert len(analytics.calls) == 1


async def test_a_failed_metrics_call_fails_only_the_view_counts_and_is_not_asked_again() -> None:
    analytics = FakeAnalytics(failing=True)
    loaders = loaders_over(analytics, FakeContent(), FakeUsers())

    await page_of(loaders, ["p1", "p2"], views=True)

    for post_id in ("p1", "p2"):
        assert (await loaders.posts.load(post_id)).id == post_id
        with pytest.raises(BackendError) as failed:
            settled(loaders.metrics.load(post_id), _views)
        assert failed.value.extensions["code"] == "UNAVAILABLE"
    assert analytics.calls == [["p1", "p2"]]


async def test_a_page_without_view_counts_asks_analytics_nothing() -> None:
    analytics = FakeAnalytics()
    loaders = loaders_over(analytics, FakeContent(), FakeUsers())

    await page_of(loaders, ["p1", "p2"], views=False)

    assert analytics.calls == []
