"""Sign-in limits through the gateway: it names each HTTP client's address to the services,
a refusal reaches the client as RATE_LIMITED with retryAfterSeconds, and a caller's
refusals never open the gateway's circuit breaker for everyone else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx

from gateway.app import build_app
from gateway.clients import open_clients
from gateway.settings import GatewaySettings
from interceptors.client.breaker import BreakerSettings
from interceptors.client.stack import ClientSettings
from services.cli.gateway import gateway_targets
from services.registry import REGISTRY
from services.runtime.rate_limit import Rate
from services.runtime.spec import Dependencies
from tests.conftest import SignUp
from tests.integration.test_sign_in_limits import OPEN, user_server

LOG_IN = "mutation($l: String!, $p: String!) { logIn(login: $l, password: $p) { token } }"


@asynccontextmanager
async def gateway(
    deps: Dependencies, addresses: dict[str, str], *clients: str
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """A gateway over a user service that allows 1 log-in a minute per client address,
    with one HTTP client per address given; its breaker opens after 5 failures."""
    limits = replace(OPEN, authenticate_per_address=Rate(per_minute=1, burst=1))
    async with AsyncExitStack() as stack:
        address = await stack.enter_async_context(user_server(deps, limits))
        targets = gateway_targets(REGISTRY, {**addresses, "user": address})
        settings = ClientSettings(breaker=BreakerSettings(failures=5))
        opened = await stack.enter_async_context(open_clients(targets, settings))
        app = build_app(GatewaySettings(), opened).asgi
        yield [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app, client=(host, 40000)),
                    base_url="http://gateway",
                )
            )
            for host in clients
        ]


async def log_in(http: httpx.AsyncClient, login: str, password: str) -> dict[str, Any]:
    response = await http.post(
        "/graphql", json={"query": LOG_IN, "variables": {"l": login, "p": password}}
    )
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_fifty_refusals_of_one_caller_leave_the_breaker_closed_for_the_next(
    deps: Dependencies, addresses: dict[str, str], sign_up: SignUp
) -> None:
    alice, bob = await sign_up(), await sign_up()
    async with gateway(deps, addresses, "198.51.100.20", "198.51.100.21") as (mallory, other):
        assert (await log_in(mallory, alice.user.handle, alice.password))["data"]["logIn"]
        for _ in range(50):
            refused = await log_in(mallory, alice.user.handle, alice.password)
            (error,) = refused["errors"]
            wait = error["extensions"]["retryAfterSeconds"]
            assert error["extensions"] == {"code": "RATE_LIMITED", "retryAfterSeconds": wait}
            assert 0 < wait <= 60
            assert error["message"].startswith("too many log-in attempts from your address")
            assert error["message"].endswith(f"try again in {wait} s")
        signed_in = await log_in(other, bob.user.handle, bob.password)
        assert "errors" not in signed_in, signed_in
        assert signed_in["data"]["logIn"]["token"]
