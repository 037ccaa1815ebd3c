"""A query cannot make the gateway do more backend work than its cost says: aliased home
feeds are refused before any RPC, and a home feed that runs reports its work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from grpc import aio

from gateway.app import build_app
from gateway.clients import RpcCounter, Target, open_clients
from gateway.resolvers.feed import WORK
from gateway.settings import GatewaySettings
from nova.content.v1 import content_pb2, content_pb2_grpc
from nova.user.v1 import user_pb2, user_pb2_grpc
from tests.bench.feed import FEED_QUERY as BENCH_FEED_QUERY
from tests.conftest import EventsSettled, SignedIn, SignUp

ALIASED_FEEDS = (
    "{ "
    + " ".join(f"f{i}: homeFeed(first: 1) {{ edges {{ node {{ id }} }} }}" for i in range(30))
    + " }"
)


@dataclass
class Gateway:
    http: httpx.AsyncClient
    counter: RpcCounter

    async def post(
        self, query: str, variables: dict[str, Any], token: str
    ) -> tuple[int, dict[str, Any]]:
        response = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"authorization": f"Bearer {token}"},
        )
        body: dict[str, Any] = response.json()
        return response.status_code, body


@pytest.fixture(scope="module")
async def gateway(targets: dict[str, Target]) -> AsyncIterator[Gateway]:
    async with open_clients(targets) as clients:
        app = build_app(GatewaySettings(), clients)
        transport = httpx.ASGITransport(app=app.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield Gateway(http=http, counter=clients.counter)


@pytest.fixture(scope="module")
async def viewer(
    sign_up: SignUp, channels: dict[str, aio.Channel], feed_events: EventsSettled
) -> SignedIn:
    """Follows one author of two posts (in the feed once the events reached it)."""
    users = user_pb2_grpc.UserServiceStub(channels["user"])
    content = content_pb2_grpc.ContentServiceStub(channels["content"])
    reader, author = await sign_up("amp"), await sign_up("amp")
    await users.Follow(user_pb2.FollowRequest(user_id=author.user.id), metadata=reader.metadata)
    for text in ("one", "two"):
        await content.CreatePost(content_pb2.CreatePostRequest(text=text), metadata=author.metadata)
    await feed_events()
    return reader


async def test_thirty_aliased_home_feeds_are_refused_with_max_cost_before_any_rpc(
    gateway: Gateway, viewer: SignedIn
) -> None:
    before = gateway.counter.total
    status, body = await gateway.post(ALIASED_FEEDS, {}, viewer.token)

    assert gateway.counter.total == before
    assert status == 200, "a GraphQL request error, answered 200 under application/json"
    [error] = body["errors"]
    assert error["extensions"] == {
        "code": "QUERY_LIMIT_EXCEEDED",
        "limit": "maxCost",
        "value": 30 * (WORK + 3),
        "maximum": 2000,
    }
    assert f"Query.homeFeed {WORK} each time" in error["message"]


async def test_a_home_feed_that_runs_reports_its_backend_work_in_the_actual_cost(
    gateway: Gateway, viewer: SignedIn
) -> None:
    before = dict(gateway.counter.calls)
    status, body = await gateway.post(
        "query($n: Int!) { homeFeed(first: $n) { edges { node { text } } } }",
        {"n": 5},
        viewer.token,
    )

    assert status == 200
    assert "errors" not in body, body["errors"]
    assert [edge["node"]["text"] for edge in body["data"]["homeFeed"]["edges"]] == ["two", "one"]
    # homeFeed's work, itself, and per edge: it and its node (5 asked, 2 came back).
    assert body["extensions"]["cost"] == {
        "requested": WORK + 1 + 5 * 2,
        "actual": WORK + 1 + 2 * 2,
        "maximum": 2000,
    }
    made = {m.rsplit("/", 1)[-1]: n - before.get(m, 0) for m, n in gateway.counter.calls.items()}
    assert {m: n for m, n in made.items() if n} == {"GetHomeFeed": 1, "BatchGetPosts": 1}


@pytest.mark.parametrize("first", [20, 100])
async def test_the_feed_bench_query_runs_under_the_default_max_cost(
    gateway: Gateway, viewer: SignedIn, first: int
) -> None:
    status, body = await gateway.post(BENCH_FEED_QUERY, {"first": first}, viewer.token)

    assert status == 200
    assert "errors" not in body, body["errors"]
    assert len(body["data"]["homeFeed"]["edges"]) == 2
    assert body["extensions"]["cost"]["requested"] == WORK + 2 + first * 9 <= 2000
