"""Issue 14's attacks on the gateway, each against a real gateway over real services, and
each refused cleanly, before any RPC: comment padding, 25 sign-ups in one request,
documents of many operations, deep or huge variables, a flood of persisted-query
registrations from one address, and 150 large distinct queries that used to grow the
process by 100 MiB."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from gateway.app import GatewayApp, build_app
from gateway.clients import Clients, Target, open_clients
from gateway.persisted_queries import sha256
from gateway.settings import GatewaySettings

EMOJI = "\U0001f600"
SIGN_UP = (
    'signUp(input: {handle: "h%d", email: "h%d@example.com", password: "pw-12345678"}) { token }'
)


@pytest.fixture(scope="module")
async def clients(targets: dict[str, Target]) -> AsyncIterator[Clients]:
    async with open_clients(targets) as opened:
        yield opened


@asynccontextmanager
async def client(
    app: GatewayApp, address: str = "198.51.100.7"
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app.asgi, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http


async def post(http: httpx.AsyncClient, payload: dict[str, Any]) -> dict[str, Any]:
    response = await http.post("/graphql", json=payload)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def refusal(body: dict[str, Any]) -> dict[str, Any]:
    assert "data" not in body, body
    [error] = body["errors"]
    extensions: dict[str, Any] = error["extensions"]
    return extensions


def persisted(query: str, **payload: Any) -> dict[str, Any]:
    hashed = {"persistedQuery": {"version": 1, "sha256Hash": sha256(query)}}
    return {"query": query, "extensions": hashed, **payload}


def by_hash(query: str) -> dict[str, Any]:
    return {"extensions": persisted(query)["extensions"]}


async def test_comment_padding_is_refused_at_the_token_limit(clients: Clients) -> None:
    app = build_app(GatewaySettings(), clients)
    async with client(app) as http:
        before = clients.counter.total
        body = await post(http, {"query": "{ viewer { id } " + "#\n" * 2000 + "}"})
    assert refusal(body)["limit"] == "maxTokens"
    assert clients.counter.total == before


async def test_twenty_five_aliased_sign_ups_are_refused_before_any_rpc(clients: Clients) -> None:
    app = build_app(GatewaySettings(), clients)
    mutation = "mutation { " + " ".join(f"a{i}: " + SIGN_UP % (i, i) for i in range(25)) + " }"
    async with client(app) as http:
        before = clients.counter.total
        body = await post(http, {"query": mutation})
    assert refusal(body) == {
        "code": "QUERY_LIMIT_EXCEEDED",
        "limit": "maxSignIns",
        "value": 25,
        "maximum": 1,
    }
    assert body["errors"][0]["message"].startswith("the mutation asks for 25 logIn or signUp")
    assert clients.counter.total == before, "not one password was hashed"


async def test_a_document_of_many_operations_is_refused(clients: Clients) -> None:
    app = build_app(GatewaySettings(), clients)
    document = " ".join(f"query q{i} {{ __typename }}" for i in range(11))
    async with client(app) as http:
        body = await post(http, {"query": document, "operationName": "q0"})
        fine = await post(http, {"query": document.rsplit(" query", 1)[0], "operationName": "q0"})
    assert refusal(body)["limit"] == "maxOperations"
    assert fine["data"] == {"__typename": "Query"}


@pytest.mark.parametrize(
    ("variables", "limit"),
    [
        ({"h": [[[[[[[[[["x"]]]]]]]]]]}, "maxVariablesDepth"),
        ({"h": "x", "pad": list(range(1100))}, "maxVariableValues"),
    ],
    ids=["11 levels", "1,101 values"],
)
async def test_deep_or_huge_variables_are_refused_before_any_rpc(
    clients: Clients, variables: dict[str, Any], limit: str
) -> None:
    app = build_app(GatewaySettings(), clients)
    query = "query($h: String!) { user(handle: $h) { id } }"
    async with client(app) as http:
        before = clients.counter.total
        body = await post(http, {"query": query, "variables": variables})
    assert refusal(body)["limit"] == limit
    assert clients.counter.total == before


async def test_one_address_registers_its_burst_then_queries_run_unregistered(
    clients: Clients,
) -> None:
    settings = GatewaySettings(
        persisted_query_registrations_per_second=1, persisted_query_registration_burst=5
    )
    app = build_app(settings, clients)
    queries = [f"{{ a{i}: __typename }}" for i in range(8)]
    async with client(app, "198.51.100.8") as flood, client(app, "198.51.100.9") as other:
        answers = [await post(flood, persisted(query)) for query in queries]
        assert [answer["data"] for answer in answers] == [{f"a{i}": "Query"} for i in range(8)], (
            "every query ran"
        )
        found = [await post(flood, by_hash(query)) for query in queries]
        assert ["data" in answer for answer in found] == [True] * 5 + [False] * 3
        assert refusal(found[5])["code"] == "PERSISTED_QUERY_NOT_FOUND"
        assert len(app.executor.persisted) == 5

        mine = "{ mine: __typename }"
        await post(other, persisted(mine))
        assert (await post(other, by_hash(mine)))["data"] == {"mine": "Query"}


async def test_large_distinct_queries_leave_both_caches_within_their_bytes(
    clients: Clients,
) -> None:
    """The issue's attack (150 distinct 90,000-emoji queries, as persisted queries), then
    150 as large as the length limit allows, from 150 addresses: the caches evict, and
    what they hold stays under their byte bounds."""
    bound = 2**20
    settings = GatewaySettings(document_cache_bytes=bound, persisted_query_cache_bytes=bound)
    app = build_app(settings, clients)
    documents, registered = app.executor.documents, app.executor.persisted
    async with client(app) as http:
        for i in range(150):
            query = '{ __type(name: "' + EMOJI * 90_000 + f'{i}") {{ name }} }}'
            assert refusal(await post(http, persisted(query)))["limit"] == "maxQueryLength"
    assert (len(documents), len(registered)) == (150, 0)
    assert documents.bytes <= 150 * 2500, "each refusal keeps its error, not its text"

    largest = 20_000 - len('{ __type(name: "") { name } }') - 3
    for i in range(150):
        async with client(app, f"198.51.100.{i}") as http:
            query = '{ __type(name: "' + EMOJI * (largest // 4) + f'{i:03}") {{ name }} }}'
            assert len(query.encode()) <= 20_000
            assert (await post(http, persisted(query)))["data"] == {"__type": None}
    assert documents.bytes <= bound
    assert registered.bytes <= bound
    # About 20 KB of text each: the document cache keeps a dozen, the persisted queries 50.
    assert 10 <= len(documents) < 150
    assert 40 <= len(registered) < 150
