"""The server bootstrap: health, reflection, draining, port clashes and unexpected errors."""

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from interceptors.server.chain import Chain
from interceptors.server.chained_server import ChainedServer
from interceptors.server.errors import ErrorMapping
from services.registry import REGISTRY
from services.runtime.errors import STATUS_BY_ERROR
from services.runtime.process import serve
from services.runtime.server import PortInUse, start_server
from services.runtime.spec import Dependencies


async def test_health_is_serving_then_not_serving_while_draining(deps: Dependencies) -> None:
    spec = REGISTRY.services["user"]
    running = await start_server(spec, deps, host="127.0.0.1", port=0)
    channel = aio.insecure_channel(f"127.0.0.1:{running.port}")
    health = health_pb2_grpc.HealthStub(channel)
    try:
        for service in ("", spec.full_name):
            response = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(service=spec.full_name))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(running.stop(grace_seconds=1))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        await stopping
    finally:
        await channel.close(None)


async def test_open_watches_end_when_the_server_stops_instead_of_holding_its_grace(
    deps: Dependencies,
) -> None:
    """Every balancing client holds a Watch on each replica; were they left open, each
    replica's stop would wait out its whole grace period."""
    running = await start_server(REGISTRY.services["user"], deps, host="127.0.0.1", port=0)
    channel = aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        stopping = asyncio.create_task(running.stop(grace_seconds=30))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await watch.read() is grpc.aio.EOF  # type: ignore[attr-defined]
        assert await watch.code() is grpc.StatusCode.OK
        await stopping
        assert time.monotonic() - started < 15, "the stop waited for the open Watch"
    finally:
        await channel.close(None)


async def test_health_of_a_service_never_set_is_not_found_with_its_name(
    deps: Dependencies,
) -> None:
    running = await start_server(REGISTRY.services["user"], deps, host="127.0.0.1", port=0)
    channel = aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(aio.AioRpcError) as unknown:
            await stub.Check(health_pb2.HealthCheckRequest(service="nova.nope.v1.Nope"))
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
        assert "nova.nope.v1.Nope" in (unknown.value.details() or "")
        watch = stub.Watch(health_pb2.HealthCheckRequest(service="nova.nope.v1.Nope"))
        reply = await watch.read()
        assert reply.status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        watch.cancel()
    finally:
        await channel.close(None)
        await running.stop(0)


async def test_a_taken_port_fails_with_the_variable_to_change(deps: Dependencies) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match="set NOVA_USER_PORT"):
            await start_server(REGISTRY.services["user"], deps, host="127.0.0.1", port=port)


@pytest.fixture
async def crashing_server() -> AsyncIterator[str]:
    async def crash(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        raise RuntimeError("database password is hunter2")

    # The error mapping alone: the request id then comes from the metadata.
    server = ChainedServer(Chain([ErrorMapping(STATUS_BY_ERROR)]), aio.server())
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Crash", {"Now": grpc.unary_unary_rpc_method_handler(crash)}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def test_an_unexpected_error_is_internal_with_a_request_id_and_no_internals(
    crashing_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with aio.insecure_channel(crashing_server) as channel:
        call = channel.unary_unary("/test.Crash/Now", None, None)
        with (
            caplog.at_level(logging.ERROR, logger="nova.errors"),
            pytest.raises(aio.AioRpcError) as error,
        ):
            await call(b"", metadata=(("x-request-id", "req-42"),))
    assert error.value.code() == grpc.StatusCode.INTERNAL
    assert error.value.details() == "internal error; quote request id req-42 when reporting it"
    assert "hunter2" not in (error.value.details() or "")
    assert "req-42" in caplog.text
    assert "hunter2" in caplog.text  # the stack goes to the log, for the operator


async def test_an_exhausted_pool_answers_resource_exhausted_instead_of_hanging(
    deps: Dependencies, database_url: str
) -> None:
    from nova.user.v1 import user_pb2, user_pb2_grpc
    from services.runtime.db import open_database

    async with open_database(database_url, size=1, acquire_timeout_ms=50) as tiny:
        running = await start_server(
            REGISTRY.services["user"], replace(deps, db=tiny), host="127.0.0.1", port=0
        )
        try:
            async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                users = user_pb2_grpc.UserServiceStub(channel)
                async with tiny.connection():
                    with pytest.raises(aio.AioRpcError) as error:
                        await users.GetUser(user_pb2.GetUserRequest(handle="anyone"), timeout=5)
                assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "no connection came free within 50 ms" in (error.value.details() or "")
                with pytest.raises(aio.AioRpcError) as error:
                    await users.GetUser(user_pb2.GetUserRequest(handle="anyone"), timeout=5)
                assert error.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            await running.stop(0)


@pytest.fixture
async def database_server(deps: Dependencies) -> AsyncIterator[str]:
    """Handlers that meet PostgreSQL's own refusals, on real connections."""
    db = deps.db

    async def store_nul(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        async with db.connection() as conn:
            await conn.fetchval("SELECT $1::text", "a\x00b")
        return b""

    async def lose_connection(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        # The server ends the connection mid-query, as a failover or a restart does.
        async with db.connection() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            query = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(10)"))
            async with db.connection() as other:
                for _ in range(500):  # until the query runs (a few ms)
                    if await other.fetchval(
                        "SELECT state = 'active' FROM pg_stat_activity WHERE pid = $1", pid
                    ):
                        break
                    await asyncio.sleep(0.01)
                await other.execute("SELECT pg_terminate_backend($1)", pid)
            await query
        return b""

    async def conflict(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        raise asyncpg.exceptions.SerializationError("could not serialize access")

    handlers = {
        "StoreNul": grpc.unary_unary_rpc_method_handler(store_nul),
        "LoseConnection": grpc.unary_unary_rpc_method_handler(lose_connection),
        "Conflict": grpc.unary_unary_rpc_method_handler(conflict),
    }
    server = ChainedServer(Chain([ErrorMapping(STATUS_BY_ERROR)]), aio.server())
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Db", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.mark.parametrize(
    ("method", "code", "message"),
    [
        ("StoreNul", grpc.StatusCode.INVALID_ARGUMENT, "a value of the request cannot be stored"),
        ("LoseConnection", grpc.StatusCode.UNAVAILABLE, "the database cannot be reached"),
        ("Conflict", grpc.StatusCode.ABORTED, "the change conflicted with a concurrent one"),
    ],
)
async def test_database_refusals_are_answered_for_what_they_are_not_as_internal(
    database_server: str,
    caplog: pytest.LogCaptureFixture,
    method: str,
    code: grpc.StatusCode,
    message: str,
) -> None:
    async with aio.insecure_channel(database_server) as channel:
        with (
            caplog.at_level(logging.WARNING, logger="nova.errors"),
            pytest.raises(aio.AioRpcError) as error,
        ):
            await channel.unary_unary(f"/test.Db/{method}", None, None)(b"", timeout=10)
    assert error.value.code() == code
    assert (error.value.details() or "").startswith(message)
    # The driver's own text goes to the operator, one line, not to the caller.
    (record,) = [r for r in caplog.records if r.name == "nova.errors"]
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert f"/test.Db/{method} answered {code.name}" in record.getMessage()


async def test_servers_turn_not_serving_together_and_serve_through_the_drain_delay(
    deps: Dependencies,
) -> None:
    """Balancers need time to see NOT_SERVING and move away: every server of the process
    answers it at once, still serving, for NOVA_DRAIN_DELAY_SECONDS; then all stop
    together (one after another, each would keep its calls for the others' delay too)."""
    draining = replace(deps, config=replace(deps.config, drain_delay_seconds=0.6))
    specs = list(REGISTRY.services.values())
    serving = serve(draining, specs, ports=dict.fromkeys(REGISTRY.services, 0))
    servers = await serving.__aenter__()
    channels = [aio.insecure_channel(f"127.0.0.1:{server.port}") for server in servers]
    checks = [health_pb2_grpc.HealthStub(channel).Check for channel in channels]
    request = health_pb2.HealthCheckRequest()
    try:
        for check in checks:
            assert (
                await check(request, timeout=5)
            ).status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        stopping = asyncio.create_task(serving.__aexit__(None, None, None))
        await asyncio.sleep(0.3)
        for check in checks:  # answered, so still serving, and saying it is leaving
            answer = await check(request, timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await stopping
        assert 0.6 <= time.monotonic() - started < 0.6 + 0.8 * len(servers)
        for check in checks:
            with pytest.raises(aio.AioRpcError) as gone:
                await check(request, timeout=2)
            assert gone.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        for channel in channels:
            await channel.close(None)
