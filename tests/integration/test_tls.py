"""Servers over TLS and mutual TLS, with certificates made for the test: Nova's clients,
the gateway, seed and the real grpcurl are answered when they trust the CA (and present a
certificate it signed, for mutual TLS); everyone else is refused with UNAVAILABLE."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from structlog.testing import capture_logs

from gateway.app import build_app
from gateway.clients import open_clients
from gateway.settings import GatewaySettings
from interceptors.client.channel_pool import ChannelPool, PoolSettings
from interceptors.client.stack import Client, ClientSettings, connect
from interceptors.client.targets import Endpoint
from interceptors.client.tls import ChannelTls
from nova.user.v1 import user_pb2, user_pb2_grpc
from services.cli.gateway import gateway_targets
from services.cli.seed import SeedError, SeedPlan, seed
from services.cli.up import running
from services.registry import REGISTRY
from services.runtime.config import Config
from services.runtime.server import start_server
from services.runtime.spec import Dependencies
from services.runtime.tls import ServerTls
from tests.conftest import chdb_env
from tests.tls_certs import Certificates

BIN = Path(sys.executable).parent
SERVING = health_pb2.HealthCheckResponse.SERVING
USER_SERVICE = REGISTRY.services["user"].full_name


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates.create(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
async def tls_user(deps: Dependencies, certs: Certificates) -> AsyncIterator[str]:
    """The user service over TLS (no client certificates asked): its address."""
    tls = ServerTls(certs.server.cert, certs.server.key)
    server = await start_server(REGISTRY.services["user"], deps, host="127.0.0.1", port=0, tls=tls)
    yield f"127.0.0.1:{server.port}"
    await server.stop(0)


@dataclass(frozen=True)
class Mesh:
    config: Config
    addresses: dict[str, str]
    graphql_url: str


@pytest.fixture(scope="module")
async def mutual(
    database_url: str, certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Mesh]:
    """Every service and the gateway, as `nova up` runs them, with NOVA_TLS_* asking for
    mutual TLS (the gateway's identity: the servers' pair, by default)."""
    env = {
        "NOVA_DATABASE_URL": database_url,
        "NOVA_DATA_DIR": str(tmp_path_factory.mktemp("tls-data")),
        **chdb_env(),
        "NOVA_BIND_HOST": "127.0.0.1",
        "NOVA_AUTH_SECRET": "tls-secret-" + "x" * 40,
        "NOVA_PASSWORD_HASH_PROFILE": "insecure-fast",
        "NOVA_SHUTDOWN_GRACE_SECONDS": "0",
        **{f"NOVA_{name.upper()}_PORT": "0" for name in REGISTRY.services},
        **certs.env(mutual=True),
    }
    config = Config.from_env(env, default_ports=REGISTRY.default_ports)
    gateway = GatewaySettings(port=0)
    services = list(REGISTRY.services)
    async with running(config, REGISTRY, services, gateway, events=False) as started:
        assert started.gateway is not None
        addresses = {
            line.split()[0]: line.split()[-1]
            for line in started.banner
            if line.split()[0] in REGISTRY.services
        }
        url = f"http://127.0.0.1:{started.gateway.port}/graphql"
        yield Mesh(config=config, addresses=addresses, graphql_url=url)


async def health(address: str, credentials: grpc.ChannelCredentials | None) -> Any:
    """The server's health, or the status code of the refusal."""
    channel = (
        aio.insecure_channel(address)
        if credentials is None
        else aio.secure_channel(address, credentials)
    )
    async with channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=USER_SERVICE), timeout=5
            )
        except aio.AioRpcError as error:
            return error.code()
        return reply.status


async def test_a_client_trusting_the_ca_is_answered_over_tls(
    tls_user: str, certs: Certificates
) -> None:
    assert await health(tls_user, grpc.ssl_channel_credentials(certs.ca.cert)) == SERVING
    settings = ClientSettings(tls=ChannelTls(certs.ca.cert))
    async with connect("user", [tls_user], settings=settings) as client:
        users = client.stub(user_pb2_grpc.UserServiceStub)
        with pytest.raises(aio.AioRpcError) as error:
            await users.GetUser(user_pb2.GetUserRequest(handle="nobody_over_tls"), timeout=5)
        # The servicer answered: the call crossed the TLS channel pool.
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_plaintext_client_or_one_trusting_another_ca_is_refused(
    tls_user: str, certs: Certificates
) -> None:
    unavailable = grpc.StatusCode.UNAVAILABLE
    assert await health(tls_user, None) == unavailable
    stranger = grpc.ssl_channel_credentials(certs.stranger_ca.cert)
    assert await health(tls_user, stranger) == unavailable


async def test_mutual_tls_answers_only_clients_with_a_certificate_the_ca_signed(
    mutual: Mesh, certs: Certificates, tmp_path: Path
) -> None:
    address, ca = mutual.addresses["user"], certs.ca.cert
    assert await health(address, grpc.ssl_channel_credentials(ca)) == grpc.StatusCode.UNAVAILABLE
    outsider = certs.stranger_ca.issue(
        tmp_path, "outsider", hosts=(), usages=(ExtendedKeyUsageOID.CLIENT_AUTH,)
    )
    assert (
        await health(address, grpc.ssl_channel_credentials(ca, outsider.key, outsider.cert))
        == grpc.StatusCode.UNAVAILABLE
    )
    client = grpc.ssl_channel_credentials(ca, certs.client.key, certs.client.cert)
    assert await health(address, client) == SERVING


async def test_the_gateway_answers_graphql_through_mutual_tls_channels(
    mutual: Mesh, certs: Certificates
) -> None:
    identity = ChannelTls(certs.ca.cert, certs.server.cert, certs.server.key)
    assert mutual.config.clients.tls == identity
    handle = f"tls_{uuid.uuid4().hex[:10]}"
    sign_up = (
        "mutation($i: SignUpInput!) { signUp(input: $i) { token user { handle } } }",
        {"i": {"handle": handle, "email": f"{handle}@example.com", "password": "pw-12345678"}},
    )
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        response = await http.post(
            mutual.graphql_url, json={"query": sign_up[0], "variables": sign_up[1]}
        )
        assert response.json()["data"]["signUp"]["user"] == {"handle": handle}
        found = await http.post(
            mutual.graphql_url,
            json={
                "query": "query($h: String!) { user(handle: $h) { handle } }",
                "variables": {"h": handle},
            },
        )
        assert found.json()["data"] == {"user": {"handle": handle}}


async def test_a_gateway_without_tls_settings_reports_the_services_unavailable(
    mutual: Mesh,
) -> None:
    targets = gateway_targets(REGISTRY, mutual.addresses)
    async with open_clients(targets, ClientSettings()) as clients:
        app = build_app(GatewaySettings(), clients)
        transport = httpx.ASGITransport(app=app.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            response = await http.post("/graphql", json={"query": '{ user(handle: "x") { id } }'})
    body = response.json()
    assert body["data"] == {"user": None}
    assert [error["extensions"]["code"] for error in body["errors"]] == ["UNAVAILABLE"]


async def test_seed_goes_through_tls_with_the_clients_settings(mutual: Mesh) -> None:
    plan = SeedPlan(
        users=2, posts_per_user=1, follows_per_user=1, comments_per_post=1, likes_per_post=1
    )
    # Without the feed's address: the seed then does not wait for the feed's consumer,
    # which this module does not run.
    writers = {name: mutual.addresses[name] for name in ("user", "content")}
    seeded = await seed(writers, plan, tls=mutual.config.clients.tls)
    assert (len(seeded.users), len(seeded.post_ids), seeded.likes) == (2, 2, 2)
    with pytest.raises(SeedError, match="failed: UNAVAILABLE"):
        await seed(writers, plan)


async def grpcurl(*args: str) -> tuple[int, str, str]:
    """Runs grpcurl without blocking the loop that serves it: (exit code, stdout, stderr)."""
    env = {name: value for name, value in os.environ.items() if "proxy" not in name.lower()}
    process = await asyncio.create_subprocess_exec(
        str(BIN / "grpcurl"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_grpcurl_lists_and_checks_health_over_tls_with_cacert(
    tls_user: str, certs: Certificates
) -> None:
    cacert = ("-cacert", str(certs.ca.cert_file))
    code, listed, err = await grpcurl(*cacert, tls_user, "list")
    assert code == 0, err
    assert {USER_SERVICE, "grpc.health.v1.Health"} <= set(listed.split())
    code, checked, err = await grpcurl(*cacert, tls_user, "grpc.health.v1.Health/Check")
    assert (code, json.loads(checked)) == (0, {"status": "SERVING"}), err


async def test_grpcurl_needs_a_client_certificate_for_mutual_tls(
    mutual: Mesh, certs: Certificates
) -> None:
    address, cacert = mutual.addresses["content"], ("-cacert", str(certs.ca.cert_file))
    code, _, err = await grpcurl(*cacert, address, "list")
    assert code != 0
    assert "Failed to dial target host" in err  # refused in the handshake
    identity = ("-cert", str(certs.client.cert_file), "-key", str(certs.client.key_file))
    code, listed, err = await grpcurl(*cacert, *identity, address, "list")
    assert code == 0, err
    assert REGISTRY.services["content"].full_name in listed.split()


def test_nova_stops_with_one_line_naming_the_missing_key(certs: Certificates) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("NOVA_")}
    env["NOVA_TLS_CERT_FILE"] = str(certs.server.cert_file)
    result = subprocess.run(
        [str(BIN / "nova"), "serve", "user"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr == (
        "Error: configuration: NOVA_TLS_CERT_FILE is set but NOVA_TLS_KEY_FILE is not; "
        "TLS needs both, or neither\n"
    )


async def test_a_plaintext_server_reachable_beyond_this_machine_is_logged(
    deps: Dependencies, certs: Certificates
) -> None:
    spec = REGISTRY.services["user"]
    tls = ServerTls(certs.server.cert, certs.server.key)
    with capture_logs() as logs:
        plaintext = await start_server(spec, deps, host="0.0.0.0", port=0)
        encrypted = await start_server(spec, deps, host="0.0.0.0", port=0, tls=tls)
    await plaintext.stop(0)
    await encrypted.stop(0)
    warned = [entry for entry in logs if "plaintext" in entry["event"]]
    assert [(entry["log_level"], entry["address"]) for entry in warned] == [
        ("warning", f"0.0.0.0:{plaintext.port}")
    ]


async def test_a_resolved_replica_is_checked_against_its_name_not_its_address(
    deps: Dependencies, certs: Certificates, tmp_path: Path
) -> None:
    """A dns:/// target connects to the addresses its name resolves to, and each replica's
    certificate names the Service (user.nova.test), not the pod's address."""
    named = certs.ca.issue(tmp_path, "named", hosts=("user.nova.test",))
    server = await start_server(
        REGISTRY.services["user"],
        deps,
        host="127.0.0.1",
        port=0,
        tls=ServerTls(named.cert, named.key),
    )
    target = f"dns:///user.nova.test:{server.port}"

    async def dns(name: str) -> tuple[Endpoint, ...]:
        # Stands in for the cluster's DNS, which this machine does not have.
        return (Endpoint(f"127.0.0.1:{server.port}", f"user.nova.test:{server.port}"),)

    try:
        pool = ChannelPool([target], PoolSettings(), ChannelTls(certs.ca.cert), resolver=dns)
        async with Client("users", pool, [], frozenset()) as users:
            stub = users.stub(health_pb2_grpc.HealthStub)
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert reply.status == SERVING
        # The same address without the name fails the certificate check.
        assert (
            await health(f"127.0.0.1:{server.port}", grpc.ssl_channel_credentials(certs.ca.cert))
            == grpc.StatusCode.UNAVAILABLE
        )
    finally:
        await server.stop(0)
