"""The gateway over HTTP against real services: queries and mutations, auth failures,
error codes, persisted queries, limits (with no backend call), and serving on uvicorn."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from gateway.app import GatewayApp, build_app
from gateway.clients import RpcCounter, Target, open_clients
from gateway.persisted_queries import sha256
from gateway.server import GatewayPortInUse, serve_gateway
from gateway.settings import GatewaySettings
from tests.conftest import SignUp

ME = "{ viewer { id handle displayName email followerCount isFollowedByViewer } }"


@dataclass
class Client:
    http: httpx.AsyncClient
    app: GatewayApp
    counter: RpcCounter

    async def post(
        self, query: str | None, variables: dict[str, Any] | None = None, **options: Any
    ) -> tuple[int, dict[str, Any]]:
        """POSTs one request; returns the status and JSON body."""
        token = options.pop("token", None)
        headers = options.pop("headers", {})
        if token:
            headers["authorization"] = f"Bearer {token}"
        payload = {"query": query, "variables": variables, **options}
        response = await self.http.post("/graphql", json=payload, headers=headers)
        return response.status_code, response.json()


async def open_client(
    targets: dict[str, Target], settings: GatewaySettings
) -> AsyncIterator[Client]:
    async with open_clients(targets) as clients:
        app = build_app(settings, clients)
        transport = httpx.ASGITransport(app=app.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield Client(http=http, app=app, counter=clients.counter)


@pytest.fixture(scope="module")
async def client(targets: dict[str, Target]) -> AsyncIterator[Client]:
    async for opened in open_client(targets, GatewaySettings()):
        yield opened


def code_of(body: dict[str, Any]) -> str:
    codes = {str(error["extensions"]["code"]) for error in body["errors"]}
    assert len(codes) == 1, body
    return codes.pop()


async def sign_up_through(client: Client, handle: str | None = None) -> dict[str, Any]:
    handle = handle or f"gq_{uuid.uuid4().hex[:10]}"
    status, body = await client.post(
        """mutation($input: SignUpInput!) {
             signUp(input: $input) { token expiresAt user { id handle displayName email } }
           }""",
        {"input": {"handle": handle, "email": f"{handle}@example.com", "password": "pw-12345678"}},
    )
    assert status == 200, body
    payload: dict[str, Any] = body["data"]["signUp"]
    return payload


async def test_health_and_graphiql(client: Client) -> None:
    assert (await client.http.get("/healthz")).json() == {"status": "ok"}
    page = await client.http.get("/graphql")
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()


async def test_a_user_signs_up_posts_comments_likes_follows_and_deletes(
    client: Client, sign_up: SignUp
) -> None:
    me = await sign_up_through(client)
    token = me["token"]
    assert me["user"]["email"].endswith("@example.com")
    other = await sign_up(prefix="gq")

    status, body = await client.post("mutation { logIn(login: $l, password: $p) { token } }")
    assert status == 200, "a GraphQL request error, answered 200 under application/json"
    assert code_of(body) == "GRAPHQL_VALIDATION_FAILED"
    _, logged_in = await client.post(
        'mutation($l: String!) { logIn(login: $l, password: "pw-12345678") { user { id } } }',
        {"l": me["user"]["handle"]},
    )
    assert logged_in["data"]["logIn"]["user"]["id"] == me["user"]["id"]

    _, created = await client.post(
        'mutation { createPost(text: "Hello, Nova") { id text author { handle } likeCount } }',
        token=token,
    )
    post = created["data"]["createPost"]
    assert (post["text"], post["author"]["handle"], post["likeCount"]) == (
        "Hello, Nova",
        me["user"]["handle"],
        0,
    )
    _, commented = await client.post(
        'mutation($p: ID!) { addComment(postId: $p, text: "First!") '
        "{ text author { id } post { commentCount } } }",
        {"p": post["id"]},
        token=token,
    )
    assert commented["data"]["addComment"] == {
        "text": "First!",
        "author": {"id": me["user"]["id"]},
        "post": {"commentCount": 1},
    }
    like = "mutation($p: ID!) { %s(postId: $p) { likeCount viewerHasLiked } }"
    _, liked = await client.post(like % "likePost", {"p": post["id"]}, token=token)
    assert liked["data"]["likePost"] == {"likeCount": 1, "viewerHasLiked": True}
    _, unliked = await client.post(like % "unlikePost", {"p": post["id"]}, token=token)
    assert unliked["data"]["unlikePost"] == {"likeCount": 0, "viewerHasLiked": False}

    follow = "mutation($u: ID!) { %s(userId: $u) { followerCount isFollowedByViewer } }"
    _, followed = await client.post(follow % "follow", {"u": other.user.id}, token=token)
    assert followed["data"]["follow"] == {"followerCount": 1, "isFollowedByViewer": True}
    _, me_now = await client.post("{ viewer { followingCount } }", token=token)
    assert me_now["data"]["viewer"] == {"followingCount": 1}
    _, unfollowed = await client.post(follow % "unfollow", {"u": other.user.id}, token=token)
    assert unfollowed["data"]["unfollow"] == {"followerCount": 0, "isFollowedByViewer": False}

    _, prefs = await client.post(
        'mutation { updatePreferences(input: {language: "pt-BR", interests: ["jazz"]}) '
        "{ language timeZone interests } }",
        token=token,
    )
    assert prefs["data"]["updatePreferences"]["language"] == "pt-BR"
    assert prefs["data"]["updatePreferences"]["interests"] == ["jazz"]
    _, read = await client.post("{ preferences { language } }", token=token)
    assert read["data"]["preferences"] == {"language": "pt-BR"}

    _, feed = await client.post(
        "query($u: ID!) { userPosts(userId: $u) { edges { cursor node { id } } "
        "pageInfo { hasNextPage endCursor } } }",
        {"u": me["user"]["id"]},
    )
    [edge] = feed["data"]["userPosts"]["edges"]
    assert edge["node"]["id"] == post["id"]
    assert feed["data"]["userPosts"]["pageInfo"] == {
        "hasNextPage": False,
        "endCursor": edge["cursor"],
    }
    _, deleted = await client.post(
        "mutation($p: ID!) { deletePost(id: $p) }", {"p": post["id"]}, token=token
    )
    assert deleted["data"]["deletePost"] == post["id"]
    _, gone = await client.post("query($p: ID!) { post(id: $p) { id } }", {"p": post["id"]})
    assert code_of(gone) == "NOT_FOUND"


async def test_viewer_and_user_lookups(client: Client, sign_up: SignUp) -> None:
    alice = await sign_up(prefix="gq")
    status, anonymous = await client.post(ME)
    assert (status, anonymous) == (200, anonymous)
    assert anonymous["data"] == {"viewer": None}
    _, mine = await client.post(ME, token=alice.token)
    assert mine["data"]["viewer"]["email"] == f"{alice.user.handle}@example.com"
    _, by_handle = await client.post(
        "query($h: String!) { user(handle: $h) { id email } }", {"h": alice.user.handle}
    )
    assert by_handle["data"]["user"] == {"id": alice.user.id, "email": None}
    _, both = await client.post('{ user(handle: "x", id: "y") { id } }')
    assert code_of(both) == "BAD_USER_INPUT"


async def test_auth_failures(client: Client, sign_up: SignUp) -> None:
    status, anonymous_write = await client.post('mutation { createPost(text: "hi") { id } }')
    assert (status, code_of(anonymous_write)) == (200, "UNAUTHENTICATED")
    assert anonymous_write["data"] is None

    before = client.counter.total
    status, malformed = await client.post(ME, headers={"authorization": "Token abc"})
    assert (status, code_of(malformed)) == (200, "UNAUTHENTICATED")
    _, feed = await client.post("{ homeFeed { edges { cursor } } }")
    assert code_of(feed) == "UNAUTHENTICATED"
    assert client.counter.total == before, "rejected without calling a service"

    alice = await sign_up(prefix="gq")
    forged = jwt.encode(
        {"sub": alice.user.id, "tid": str(uuid.uuid4()), "iss": "nova", "exp": 4102444800},
        "not the services' signing key, long enough for HS256",
    )
    _, refused = await client.post(ME, token=forged)
    assert code_of(refused) == "UNAUTHENTICATED"
    assert refused["data"] == {"viewer": None}


async def test_grpc_status_codes_map_to_graphql_codes(client: Client, sign_up: SignUp) -> None:
    alice, bob = await sign_up(prefix="gq"), await sign_up(prefix="gq")
    _, taken = await client.post(
        "mutation($i: SignUpInput!) { signUp(input: $i) { token } }",
        {"i": {"handle": alice.user.handle, "email": "new@example.com", "password": "pw-123456"}},
    )
    assert code_of(taken) == "ALREADY_EXISTS"
    _, created = await client.post(
        'mutation { createPost(text: "mine") { id } }', token=alice.token
    )
    post_id = created["data"]["createPost"]["id"]
    _, forbidden = await client.post(
        "mutation($p: ID!) { deletePost(id: $p) }", {"p": post_id}, token=bob.token
    )
    assert code_of(forbidden) == "FORBIDDEN"
    _, empty = await client.post('mutation { createPost(text: "") { id } }', token=alice.token)
    assert code_of(empty) == "BAD_USER_INPUT"
    assert "text" in empty["errors"][0]["message"]


async def test_partial_data_when_one_field_fails(client: Client, sign_up: SignUp) -> None:
    alice = await sign_up(prefix="gq")
    before = client.counter.total
    status, body = await client.post(
        '{ viewer { handle } post(id: "not-an-id") { id } }', token=alice.token
    )
    assert status == 200
    assert body["data"] == {"viewer": {"handle": alice.user.handle}, "post": None}
    [error] = body["errors"]
    assert (error["path"], error["extensions"]["code"]) == (["post"], "BAD_USER_INPUT")
    assert client.counter.total - before == 1, "only the viewer was fetched"


async def test_a_service_that_is_down_is_unavailable(targets: dict[str, Target]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    settings = GatewaySettings(request_timeout_seconds=2)
    async for down in open_client(
        {**targets, "content": replace(targets["content"], address=dead)}, settings
    ):
        _, body = await down.post(f'{{ post(id: "{uuid.uuid4()}") {{ id }} }}')
        assert code_of(body) == "UNAVAILABLE"
        assert body["errors"][0]["message"] == "a backend service is unavailable; retry later"


async def test_automatic_persisted_queries_round_trip(client: Client, sign_up: SignUp) -> None:
    alice = await sign_up(prefix="gq")
    query = "query($h: String!) { user(handle: $h) { id } }"
    hashed = {"persistedQuery": {"version": 1, "sha256Hash": sha256(query)}}
    variables = {"h": alice.user.handle}

    status, missing = await client.post(None, variables, extensions=hashed)
    assert (status, missing["errors"][0]["message"]) == (200, "PersistedQueryNotFound")
    assert code_of(missing) == "PERSISTED_QUERY_NOT_FOUND"
    _, registered = await client.post(query, variables, extensions=hashed)
    assert registered["data"]["user"]["id"] == alice.user.id
    _, by_hash = await client.post(None, variables, extensions=hashed)
    assert by_hash["data"] == registered["data"]

    response = await client.http.get(
        "/graphql",
        params={"extensions": json.dumps(hashed), "variables": json.dumps(variables)},
    )
    assert response.json()["data"] == registered["data"]
    status, mismatch = await client.post(query + " ", variables, extensions=hashed)
    assert (status, code_of(mismatch)) == (400, "BAD_REQUEST")


async def test_a_get_request_cannot_run_a_mutation(client: Client) -> None:
    response = await client.http.get(
        "/graphql", params={"query": 'mutation { createPost(text: "x") { id } }'}
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert code_of(response.json()) == "BAD_REQUEST"


async def test_safelist_mode_runs_only_the_listed_documents(
    targets: dict[str, Target], tmp_path: Path
) -> None:
    listed = "{ viewer { id } }"
    manifest = {
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [{"id": sha256(listed), "name": "Me", "type": "query", "body": listed}],
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    async for locked in open_client(targets, GatewaySettings(safelist=path)):
        hashed = {"persistedQuery": {"version": 1, "sha256Hash": sha256(listed)}}
        assert (await locked.post(None, extensions=hashed))[1] == {
            "data": {"viewer": None},
            "extensions": {"cost": {"requested": 1, "actual": 0, "maximum": 2000}},
        }
        status, refused = await locked.post("{ viewer { handle } }")
        assert (status, code_of(refused)) == (200, "PERSISTED_QUERY_NOT_IN_LIST")


LIMITED = [
    ("{" + " __typename" * 1000 + " }", None, "maxTokens"),
    (
        '{ post(id: "x") { comments { post { comments { post { comments { post { comments '
        "{ post { comments { id } } } } } } } } } } }",
        None,
        "maxDepth",
    ),
    ("{ " + " ".join(f"a{i}: viewer {{ id }}" for i in range(31)) + " }", None, "maxAliases"),
    ("query($n: Int!) { homeFeed(first: $n) { edges { cursor } } }", {"n": 500}, "maxPageSize"),
    (
        "query($n: Int!) { homeFeed(first: $n) { edges { node { comments(first: 20) "
        "{ post { author { id } } } } } } }",
        {"n": 100},
        "maxCost",
    ),
]


@pytest.mark.parametrize(("query", "variables", "limit"), LIMITED, ids=[x[2] for x in LIMITED])
async def test_each_limit_rejects_before_any_backend_call(
    client: Client, query: str, variables: dict[str, Any] | None, limit: str
) -> None:
    before = client.counter.total
    status, body = await client.post(query, variables)
    assert status == 200
    [error] = body["errors"]
    assert error["extensions"]["code"] == "QUERY_LIMIT_EXCEEDED"
    assert error["extensions"]["limit"] == limit
    assert str(error["extensions"]["value"]) in error["message"] or limit == "maxTokens"
    assert client.counter.total == before


async def test_bad_variables_are_bad_user_input(client: Client) -> None:
    status, body = await client.post(
        "query($n: Int!) { homeFeed(first: $n) { edges { cursor } } }", {"n": "many"}
    )
    assert (status, code_of(body)) == (200, "BAD_USER_INPUT")


async def test_a_repeated_query_is_served_from_the_document_cache(client: Client) -> None:
    documents = client.app.executor.documents
    query = "{ viewer { id createdAt } }"
    await client.post(query)
    hits = documents.hits
    _, body = await client.post(query)
    assert documents.hits == hits + 1
    assert body == {
        "data": {"viewer": None},
        "extensions": {"cost": {"requested": 1, "actual": 0, "maximum": 2000}},
    }


async def test_production_mode_has_no_introspection_and_no_graphiql(
    targets: dict[str, Target],
) -> None:
    async for production in open_client(targets, GatewaySettings(production=True)):
        assert (await production.http.get("/graphql")).status_code == 405
        status, body = await production.post("{ __schema { queryType { name } } }")
        assert status == 200
        assert "introspection" in body["errors"][0]["message"]
        _, typename = await production.post("{ __typename }")
        assert typename["data"] == {"__typename": "Query"}


async def test_serve_gateway_answers_over_real_http_and_reports_a_busy_port(
    targets: dict[str, Target],
) -> None:
    settings = GatewaySettings(port=0)
    async with serve_gateway(settings, targets, host="127.0.0.1", grace_seconds=1) as running:
        url = f"http://127.0.0.1:{running.port}"
        async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
            assert (await http.get("/healthz")).status_code == 200
            response = await http.post("/graphql", json={"query": "{ viewer { id } }"})
            assert response.json()["data"] == {"viewer": None}
        busy = GatewaySettings(port=running.port)
        async with AsyncExitStack() as stack:
            with pytest.raises(GatewayPortInUse, match="NOVA_GATEWAY_PORT"):
                await stack.enter_async_context(serve_gateway(busy, targets, host="127.0.0.1"))


async def test_bad_input_from_one_caller_never_opens_the_breaker_for_everyone(
    client: Client, sign_up: SignUp
) -> None:
    """Five failures open a target's breaker (the default); twenty anonymous log-ins with a
    NUL in the login are each the caller's mistake, and leave it closed."""
    ada = await sign_up("breaker")
    bad = 'mutation { logIn(login: "a\\u0000b", password: "x") { token } }'
    for _ in range(20):
        status, body = await client.post(bad)
        assert status == 200
        assert code_of(body) == "BAD_USER_INPUT"
        assert "login contains a NUL character" in body["errors"][0]["message"]
    _, body = await client.post(
        "query($h: String!) { user(handle: $h) { handle } }", {"h": ada.user.handle}
    )
    assert body == {"data": {"user": {"handle": ada.user.handle}}, "extensions": body["extensions"]}


async def test_a_variable_that_is_not_unicode_text_is_a_bad_request(client: Client) -> None:
    # JSON's escape allows an unpaired surrogate, which no Unicode text (or service) holds.
    raw = (
        b'{"query": "query($h: String!) { user(handle: $h) { id } }", '
        b'"variables": {"h": "a\\ud800"}}'
    )
    response = await client.http.post(
        "/graphql", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    body = response.json()
    assert code_of(body) == "BAD_REQUEST"
    assert "variable $h contains an unpaired surrogate" in body["errors"][0]["message"]


async def test_a_body_over_the_limit_is_refused_before_it_is_read_whole(
    targets: dict[str, Target],
) -> None:
    small = GatewaySettings(max_body_bytes=1000)
    async for limited in open_client(targets, small):
        query = "{ viewer { id } }"
        fine = await limited.http.post("/graphql", json={"query": query})
        assert fine.status_code == 200
        padded = {"query": query, "variables": {"pad": "x" * 3_000_000}}
        declared = await limited.http.post("/graphql", json=padded)
        assert declared.status_code == 413
        (error,) = declared.json()["errors"]
        assert error["extensions"] == {
            "code": "REQUEST_TOO_LARGE",
            "limit": "maxBodyBytes",
            "value": int(declared.request.headers["content-length"]),
            "maximum": 1000,
        }

        async def chunks() -> AsyncIterator[bytes]:  # no length declared: counted as read
            yield b'{"query": "{ viewer { id } }", "variables": {"pad": "'
            for _ in range(100):
                yield b"x" * 1000
            yield b'"}}'

        streamed = await limited.http.post(
            "/graphql", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert streamed.json()["errors"][0]["extensions"]["code"] == "REQUEST_TOO_LARGE"
        assert "over 1000 bytes" in streamed.json()["errors"][0]["message"]
