"""The gateway's RPC bill: the home feed costs the same few batch RPCs for any page size,
each key reaches a backend once per request, and one failed key fails only its field."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from grpc import aio

from gateway.app import build_app
from gateway.clients import RpcCounter, Target, open_clients
from gateway.loaders import Loaders
from gateway.settings import GatewaySettings
from interceptors.client.call import Invoke, OutgoingCall
from nova.content.v1 import content_pb2, content_pb2_grpc
from nova.user.v1 import user_pb2, user_pb2_grpc
from tests.bench.per_field import PerFieldLoaders
from tests.conftest import EventsSettled, SignedIn, SignUp

if TYPE_CHECKING:
    UnaryUnaryClientInterceptor = aio.UnaryUnaryClientInterceptor[Any, Any]
else:
    # grpc-stubs makes the interceptor generic; grpcio's runtime class is not subscriptable.
    UnaryUnaryClientInterceptor = aio.UnaryUnaryClientInterceptor

FEED_QUERY = """
query Feed($first: Int!) {
  homeFeed(first: $first) {
    edges {
      node {
        id text createdAt
        author { id handle displayName }
        likeCount commentCount viewerHasLiked
        comments(first: 3) { id text author { id handle } }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""
AUTHORS = 6
POSTS_PER_AUTHOR = 9


class Recorder:
    """Keeps every request the gateway sends, to check which keys went to a backend: an
    outer client layer, so retries would not be recorded twice."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []

    async def __call__(self, call: OutgoingCall, proceed: Invoke) -> Any:
        self.requests.append((call.method.rsplit("/", 1)[-1], call.request))
        return await proceed(call)

    def ids(self, method: str) -> list[str]:
        """Every id sent to `method` (BatchGetUsers, BatchGetPosts, ...), in order."""
        found: list[str] = []
        for name, request in self.requests:
            if name == method:
                found.extend(getattr(request, "ids", None) or request.post_ids)
        return found

    def methods(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name, _ in self.requests:
            counts[name] = counts.get(name, 0) + 1
        return counts


@dataclass
class Gateway:
    http: httpx.AsyncClient
    counter: RpcCounter
    recorder: Recorder

    async def query(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        """Runs one query and returns its JSON; the recorder holds only its requests."""
        self.recorder.requests.clear()
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        body: dict[str, Any] = response.json()
        return body


@asynccontextmanager
async def open_gateway(
    targets: dict[str, Target], settings: GatewaySettings, loaders: type[Loaders] = Loaders
) -> AsyncIterator[Gateway]:
    """The gateway app in-process over clients that also record each request."""
    recorder = Recorder()
    async with open_clients(targets, observers=[recorder]) as clients:
        app = build_app(settings, clients, loaders=loaders)
        transport = httpx.ASGITransport(app=app.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield Gateway(http=http, counter=clients.counter, recorder=recorder)


@pytest.fixture(scope="module")
async def gateway(targets: dict[str, Target]) -> AsyncIterator[Gateway]:
    async with open_gateway(targets, GatewaySettings()) as opened:
        yield opened


@pytest.fixture(scope="module")
async def per_field_gateway(targets: dict[str, Target]) -> AsyncIterator[Gateway]:
    """The gateway as `./dev bench feed` builds its N+1 variant."""
    async with open_gateway(targets, GatewaySettings(), PerFieldLoaders) as opened:
        yield opened


@dataclass(frozen=True)
class World:
    viewer: SignedIn
    authors: list[SignedIn]
    outsiders: list[SignedIn]
    """Comment on the authors' posts but are not followed by the viewer."""


@pytest.fixture(scope="module")
async def world(
    sign_up: SignUp, channels: dict[str, aio.Channel], feed_events: EventsSettled
) -> World:
    """A viewer following 6 authors of 9 posts each; every post has 4 comments, by an
    author and by outsiders the viewer does not follow. Returned once the posts are in
    the viewer's feed (through the outbox, the relay and the feed's consumer)."""
    users = user_pb2_grpc.UserServiceStub(channels["user"])
    content = content_pb2_grpc.ContentServiceStub(channels["content"])
    viewer, *others = await asyncio.gather(*(sign_up("gw") for _ in range(1 + AUTHORS + 3)))
    authors, outsiders = others[:AUTHORS], others[AUTHORS:]
    await asyncio.gather(
        *(
            users.Follow(user_pb2.FollowRequest(user_id=a.user.id), metadata=viewer.metadata)
            for a in authors
        )
    )
    posts = await asyncio.gather(
        *(
            content.CreatePost(
                content_pb2.CreatePostRequest(text=f"post {i} by {a.user.handle}"),
                metadata=a.metadata,
            )
            for a in authors
            for i in range(POSTS_PER_AUTHOR)
        )
    )
    commenters = [authors[0], *outsiders]
    await asyncio.gather(
        *(
            content.CreateComment(
                content_pb2.CreateCommentRequest(post_id=p.post.id, text="nice"),
                metadata=c.metadata,
            )
            for p in posts
            for c in commenters
        )
    )
    await feed_events()
    return World(viewer=viewer, authors=authors, outsiders=outsiders)


FEED_RPCS = {"GetHomeFeed": 1, "BatchGetPosts": 1, "BatchGetUsers": 1}
"""The feed's bill for any page size: the page of post ids, the posts with their stats
and comments, and the posts' authors and commenters together."""


@pytest.mark.parametrize("first", [5, 20, 50])
async def test_the_home_feed_costs_the_same_three_batch_rpcs_for_any_page_size(
    gateway: Gateway, world: World, first: int
) -> None:
    before = gateway.counter.total
    body = await gateway.query(FEED_QUERY, {"first": first}, token=world.viewer.token)

    assert "errors" not in body, body["errors"]
    edges = body["data"]["homeFeed"]["edges"]
    assert len(edges) == first
    assert gateway.recorder.methods() == FEED_RPCS
    assert gateway.counter.total - before == sum(FEED_RPCS.values())
    author_ids = {a.user.id for a in world.authors}
    for edge in edges:
        post = edge["node"]
        assert post["author"]["id"] in author_ids
        assert (post["likeCount"], post["commentCount"], post["viewerHasLiked"]) == (0, 4, False)
        assert len(post["comments"]) == 3
        assert all(comment["author"]["handle"] for comment in post["comments"])
    # Each author and commenter once, in one call.
    fetched = gateway.recorder.ids("BatchGetUsers")
    assert len(fetched) == len(set(fetched))
    assert set(fetched) <= {u.user.id for u in [*world.authors, *world.outsiders]}


async def test_per_field_resolvers_make_one_rpc_per_field_and_give_the_same_data(
    gateway: Gateway, per_field_gateway: Gateway, world: World
) -> None:
    batched = await gateway.query(FEED_QUERY, {"first": 5}, token=world.viewer.token)
    naive = await per_field_gateway.query(FEED_QUERY, {"first": 5}, token=world.viewer.token)

    assert naive == batched
    # Per post: author, three stats fields, comments; per comment: its author.
    assert per_field_gateway.recorder.methods() == {
        "GetHomeFeed": 1,
        "BatchGetPosts": 5,
        "BatchGetUsers": 5 + 5 * 3,
        "BatchGetPostStats": 5 * 3,
        "BatchListComments": 5,
    }


async def test_a_key_goes_to_a_backend_once_across_aliases_and_depths(
    gateway: Gateway, world: World
) -> None:
    author = world.authors[0]
    page = await gateway.query(
        "query($id: ID!) { userPosts(userId: $id, first: 1) { edges { node { id } } } }",
        {"id": author.user.id},
    )
    post_id = page["data"]["userPosts"]["edges"][0]["node"]["id"]
    query = """
    query($id: ID!) {
      a: post(id: $id) { author { id } comments(first: 4) { author { handle } } }
      b: post(id: $id) { text author { handle } comments(first: 4) { post { id } } }
    }"""
    body = await gateway.query(query, {"id": post_id})

    assert "errors" not in body, body["errors"]
    assert body["data"]["a"]["author"]["id"] == author.user.id
    assert gateway.recorder.ids("BatchGetPosts") == [post_id]
    assert gateway.recorder.ids("BatchListComments") == [post_id]
    users = gateway.recorder.ids("BatchGetUsers")
    assert users[0] == author.user.id, "the post's author is fetched with the first level"
    assert sorted(users) == sorted({author.user.id, *(o.user.id for o in world.outsiders)})


async def test_a_missing_key_fails_only_its_own_field(gateway: Gateway, world: World) -> None:
    first = await gateway.query(
        "query($id: ID!) { userPosts(userId: $id, first: 1) { edges { node { id } } } }",
        {"id": world.authors[1].user.id},
    )
    post_id = first["data"]["userPosts"]["edges"][0]["node"]["id"]
    unknown = str(uuid.uuid4())
    body = await gateway.query(
        "query($a: ID!, $b: ID!) { found: post(id: $a) { id } gone: post(id: $b) { id } }",
        {"a": post_id, "b": unknown},
    )

    assert body["data"] == {"found": {"id": post_id}, "gone": None}
    [error] = body["errors"]
    assert error["path"] == ["gone"]
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert gateway.recorder.methods() == {"BatchGetPosts": 1}
