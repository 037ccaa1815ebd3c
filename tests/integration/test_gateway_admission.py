"""Over HTTP against real services: a gateway executing all it admits answers the next
requests 503 OVERLOADED with Retry-After at once, and serves them all when they may wait."""

from __future__ import annotations

import asyncio

import httpx

from gateway.admission import AdmissionSettings
from gateway.app import build_app
from gateway.clients import Target, open_clients
from gateway.settings import GatewaySettings
from tests.conftest import SignUp

QUERY = {"query": "{ viewer { handle followerCount } }"}


async def _burst(
    targets: dict[str, Target], token: str, admission: AdmissionSettings, requests: int
) -> list[httpx.Response]:
    async with open_clients(targets) as clients:
        app = build_app(GatewaySettings(admission=admission), clients)
        transport = httpx.ASGITransport(app=app.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            headers = {"authorization": f"Bearer {token}"}
            return await asyncio.gather(
                *(http.post("/graphql", json=QUERY, headers=headers) for _ in range(requests))
            )


async def test_past_the_limit_requests_are_refused_at_once_with_retry_after(
    targets: dict[str, Target], sign_up: SignUp
) -> None:
    viewer = await sign_up("adm")
    no_wait = AdmissionSettings(max_in_flight=1, max_queued=0, queue_timeout_seconds=0)

    responses = await _burst(targets, viewer.token, no_wait, 20)

    served = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 503]
    assert len(served) + len(refused) == 20
    assert served, "one ran"
    assert refused, "while the others arrived"
    assert all(r.json()["data"]["viewer"]["handle"] == viewer.user.handle for r in served)
    body = refused[0].json()
    assert refused[0].headers["retry-after"] == "1"
    assert body["errors"][0]["extensions"] == {"code": "OVERLOADED", "retryAfterSeconds": 1}
    assert "at capacity" in body["errors"][0]["message"]


async def test_requests_that_may_wait_are_all_served_in_turn(
    targets: dict[str, Target], sign_up: SignUp
) -> None:
    viewer = await sign_up("adm")
    waiting = AdmissionSettings(max_in_flight=1, max_queued=64, queue_timeout_seconds=10)

    responses = await _burst(targets, viewer.token, waiting, 20)

    assert [r.status_code for r in responses] == [200] * 20
