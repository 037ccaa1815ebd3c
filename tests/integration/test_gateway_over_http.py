"""GraphQL over HTTP against a real gateway and services: the response's media type from
Accept, the status of each kind of refusal under application/json and
application/graphql-response+json, and the 405, 406, 413 and 415 of HTTP itself."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.app import build_app
from gateway.clients import RpcCounter, Target, open_clients
from gateway.persisted_queries import sha256
from gateway.settings import GatewaySettings

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"


@dataclass
class Gateway:
    http: httpx.AsyncClient
    counter: RpcCounter

    async def post(self, payload: Any, accept: str | None, **headers: str) -> httpx.Response:
        if accept is not None:
            headers["accept"] = accept
        return await self.http.post("/graphql", json=payload, headers=headers)


@pytest.fixture(scope="module")
async def gateway(targets: dict[str, Target]) -> AsyncIterator[Gateway]:
    async with open_clients(targets) as clients:
        app = build_app(GatewaySettings(), clients)
        transport = httpx.ASGITransport(app=app.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield Gateway(http, clients.counter)


def codes(response: httpx.Response) -> list[str]:
    return [error["extensions"]["code"] for error in response.json()["errors"]]


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE}, {JSON};q=0.9", GRAPHQL_RESPONSE),
        (JSON, JSON),
        ("*/*", JSON),
        (None, JSON),
    ],
)
async def test_the_response_is_in_the_media_type_accept_prefers(
    gateway: Gateway, accept: str | None, media: str
) -> None:
    response = await gateway.post({"query": "{ __typename }"}, accept)
    assert response.status_code == 200
    assert response.headers["content-type"] == f"{media}; charset=utf-8"
    assert response.json()["data"] == {"__typename": "Query"}


REQUEST_ERRORS = [
    ({"query": "{"}, "GRAPHQL_PARSE_FAILED"),
    ({"query": "{ noSuchField }"}, "GRAPHQL_VALIDATION_FAILED"),
    (
        {"query": "query($id: ID!) { post(id: $id) { id } }", "variables": {"id": None}},
        "BAD_USER_INPUT",
    ),
    ({"query": "query A { __typename }", "operationName": "B"}, "OPERATION_RESOLUTION_FAILURE"),
    ({"query": "{ " + " ".join(f"a{i}: __typename" for i in range(31)) + " }"}, None),
    (
        {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha256("{ nope }")}}},
        "PERSISTED_QUERY_NOT_FOUND",
    ),
]


@pytest.mark.parametrize(
    ("payload", "code"),
    REQUEST_ERRORS,
    ids=["parse", "validation", "variables", "operation", "a limit", "persisted query"],
)
async def test_a_request_error_is_200_as_json_and_400_as_graphql_response(
    gateway: Gateway, payload: dict[str, Any], code: str | None
) -> None:
    before = gateway.counter.total
    legacy = await gateway.post(payload, JSON)
    modern = await gateway.post(payload, GRAPHQL_RESPONSE)
    assert (legacy.status_code, modern.status_code) == (200, 400)
    assert modern.headers["content-type"] == f"{GRAPHQL_RESPONSE}; charset=utf-8"
    assert legacy.json() == modern.json()
    assert "data" not in modern.json(), "execution never started"
    assert codes(modern) == [code or "QUERY_LIMIT_EXCEEDED"]
    assert gateway.counter.total == before


async def test_field_errors_during_execution_are_200_with_partial_data(
    gateway: Gateway,
) -> None:
    response = await gateway.post(
        {"query": '{ __typename post(id: "not-an-id") { id } }'}, GRAPHQL_RESPONSE
    )
    assert response.status_code == 200
    assert response.json()["data"] == {"__typename": "Query", "post": None}
    assert codes(response) == ["BAD_USER_INPUT"]


async def test_a_header_that_is_not_a_token_is_401_as_graphql_response(
    gateway: Gateway,
) -> None:
    payload = {"query": "{ viewer { id } }"}
    legacy = await gateway.post(payload, JSON, authorization="Token abc")
    modern = await gateway.post(payload, GRAPHQL_RESPONSE, authorization="Token abc")
    assert (legacy.status_code, modern.status_code) == (200, 401)
    assert modern.headers["www-authenticate"] == "Bearer"
    assert codes(modern) == ["UNAUTHENTICATED"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"query": ', "the request body is not valid JSON"),
        (b'{"query": "\xff"}', "the request body is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, None),
        (b'{"qeury": "{ __typename }"}', "send a query, or a persistedQuery extension"),
        (b'{"query": {"obj": "ect"}}', "query must be a string"),
        (b'{"query": "{ __typename }", "variables": [7]}', "variables must be an object"),
        (
            b'{"query": "{ __typename }", "variables": {"v": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
            None,
        ),
        (b'[{"query": "{ __typename }"}]', "batched requests are not supported"),
        (b'{"query": "{ __typename \\ud800 }"}', "the query contains an unpaired surrogate"),
    ],
    ids=[
        "broken JSON",
        "not UTF-8",
        "JSON too deep to decode",
        "no query",
        "query not a string",
        "variables not an object",
        "variables too deep to decode",
        "a batch",
        "a query that is not Unicode",
    ],
)
@pytest.mark.parametrize("accept", [JSON, GRAPHQL_RESPONSE])
async def test_a_body_that_is_not_a_graphql_request_is_400_either_way(
    gateway: Gateway, content: bytes, message: str | None, accept: str
) -> None:
    response = await gateway.http.post(
        "/graphql", content=content, headers={"content-type": JSON, "accept": accept}
    )
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    if message is None:
        assert error["message"].endswith("nests too deeply to decode")
    else:
        assert error["message"].startswith(message)


async def test_a_mutation_over_get_is_405_with_allow(gateway: Gateway) -> None:
    for accept in (JSON, GRAPHQL_RESPONSE):
        response = await gateway.http.get(
            "/graphql",
            params={"query": "mutation { __typename }"},
            headers={"accept": accept},
        )
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert codes(response) == ["BAD_REQUEST"]
    query = await gateway.http.get("/graphql", params={"query": "{ __typename }"})
    assert query.json()["data"] == {"__typename": "Query"}


async def test_an_accept_the_gateway_cannot_answer_is_406(gateway: Gateway) -> None:
    response = await gateway.post({"query": "{ __typename }"}, "text/html")
    assert response.status_code == 406
    assert response.headers["content-type"] == f"{JSON}; charset=utf-8"
    assert GRAPHQL_RESPONSE in response.json()["errors"][0]["message"]
    page = await gateway.http.get("/graphql", headers={"accept": "text/html"})
    assert (page.status_code, "graphiql" in page.text.lower()) == (200, True)


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "multipart/form-data; boundary=x", "application/json; charset=latin-1"],
)
async def test_a_body_that_is_not_json_in_utf8_is_415(
    gateway: Gateway, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await gateway.http.post(
        "/graphql", content=json.dumps({"query": "{ __typename }"}), headers=headers
    )
    assert response.status_code == 415
    [error] = response.json()["errors"]
    assert error["message"].startswith("send the request as Content-Type: application/json")


async def test_a_body_over_the_limit_is_413_in_the_accepted_media_type(
    gateway: Gateway,
) -> None:
    payload = {"query": "{ __typename }", "variables": {"pad": "x" * 1_100_000}}
    response = await gateway.post(payload, GRAPHQL_RESPONSE)
    assert response.status_code == 413
    assert response.headers["content-type"] == f"{GRAPHQL_RESPONSE}; charset=utf-8"
    assert codes(response) == ["REQUEST_TOO_LARGE"]
