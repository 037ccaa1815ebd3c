"""Streams on a real server (start_server, the user service, its health and reflection):
idle watches take no unary slot, streams are bounded per connection and per server, a
stream that falls silent is ended, and one that ends frees its place."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from interceptors.context import REFUSAL_KEY
from interceptors.server.backpressure import BackpressureSettings
from interceptors.server.streams import StreamSettings
from nova.user.v1 import user_pb2, user_pb2_grpc
from services.registry import REGISTRY
from services.runtime.server import RunningServer, start_server
from services.runtime.server_layers import ServerLayers
from services.runtime.spec import Dependencies
from tests.conftest import SignUp

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
EVERYTHING = health_pb2.HealthCheckRequest(service="")
LIST_SERVICES = reflection_pb2.ServerReflectionRequest(list_services="")

Watch = Any
"""A Health/Watch call (grpc.aio's UnaryStreamCall; the stubs' typing says less)."""


class Served:
    """A running user service and the means to open connections to it."""

    def __init__(self, running: RunningServer, stack: AsyncExitStack) -> None:
        self.running = running
        self.address = f"127.0.0.1:{running.port}"
        self._stack = stack

    async def connection(self) -> aio.Channel:
        """A channel of its own connection: channels to one address would otherwise share
        one (gRPC's global subchannel pool), and the limits here are per connection."""
        channel = aio.insecure_channel(
            self.address, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        await self._stack.enter_async_context(channel)
        await channel.channel_ready()
        return channel


@pytest.fixture
def serve(deps: Dependencies) -> Callable[[ServerLayers], Any]:
    @asynccontextmanager
    async def served(layers: ServerLayers) -> AsyncIterator[Served]:
        running = await start_server(
            REGISTRY.services["user"], deps, host="127.0.0.1", port=0, layers=layers
        )
        try:
            async with AsyncExitStack() as stack:
                yield Served(running, stack)
        finally:
            await running.server.stop(None)

    return served


async def watch(channel: aio.Channel, deadline: float | None = None) -> Watch:
    """An open Watch, once it has answered its first status (`deadline`: the call's)."""
    call = health_pb2_grpc.HealthStub(channel).Watch(EVERYTHING, timeout=deadline)
    assert (await call.read()).status == SERVING
    return call


async def refused(channel: aio.Channel) -> aio.AioRpcError:
    call = health_pb2_grpc.HealthStub(channel).Watch(EVERYTHING)
    with pytest.raises(aio.AioRpcError) as error:
        await call.read()
    return error.value


async def watch_once_freed(channel: aio.Channel) -> Watch:
    """A Watch, as soon as the server has counted a stream that just ended as gone (the
    client's cancel reaches it a moment after the client returns)."""
    for _ in range(200):
        try:
            return await watch(channel)
        except aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            await asyncio.sleep(0.01)
    raise AssertionError("the ended stream's place was never given back")


def trailing(error: aio.AioRpcError) -> Mapping[str, str | bytes]:
    # grpc.aio answers an aio.Metadata mapping; grpc-stubs types the sync API's tuple.
    return cast(Mapping[str, str | bytes], error.trailing_metadata())


async def test_idle_watches_leave_every_unary_slot_to_unary_calls(
    serve: Callable[[ServerLayers], Any], sign_up: SignUp
) -> None:
    """The issue's case: with NOVA_MAX_IN_FLIGHT=20, 25 idle watches on one connection had
    every later unary call refused."""
    ada = await sign_up("streams")
    layers = ServerLayers(
        backpressure=BackpressureSettings(max_in_flight=20),
        streams=StreamSettings(max_per_connection=32),
    )
    async with serve(layers) as served:
        channel = await served.connection()
        watches = [await watch(channel) for _ in range(25)]
        health = health_pb2_grpc.HealthStub(channel)
        # All 20 unary slots are free: 20 checks at once are all served.
        checks = await asyncio.gather(*(health.Check(EVERYTHING, timeout=5) for _ in range(20)))
        assert [check.status for check in checks] == [SERVING] * 20
        users = user_pb2_grpc.UserServiceStub(channel)
        found = await users.GetUser(user_pb2.GetUserRequest(id=ada.user.id), timeout=5)
        assert found.user.handle == ada.user.handle
        for call in watches:
            call.cancel()


async def test_a_connection_gets_16_streams_and_another_connection_still_opens_one(
    serve: Callable[[ServerLayers], Any],
) -> None:
    async with serve(ServerLayers()) as served:
        first, second = await served.connection(), await served.connection()
        watches = [await watch(first) for _ in range(16)]
        error = await refused(first)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details() == (
            "too many streams on this connection: 16 open, the limit is 16 "
            "(NOVA_MAX_STREAMS_PER_CONNECTION); close one or open this one on another "
            "connection"
        )
        assert trailing(error)[REFUSAL_KEY] == "caller"
        other = await watch(second)
        # The full connection still serves unary calls.
        check = await health_pb2_grpc.HealthStub(first).Check(EVERYTHING, timeout=5)
        assert check.status == SERVING
        # A stream that ends gives its place back.
        watches.pop().cancel()
        watches.append(await watch_once_freed(first))
        for call in (*watches, other):
            call.cancel()


async def test_the_server_wide_bound_holds_across_connections(
    serve: Callable[[ServerLayers], Any],
) -> None:
    layers = ServerLayers(streams=StreamSettings(max_per_connection=2, max_per_server=3))
    async with serve(layers) as served:
        one, two, three = [await served.connection() for _ in range(3)]
        watches = [await watch(one), await watch(one), await watch(two)]
        for channel in (two, three):
            error = await refused(channel)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error.details() == (
                "too many streams on this server: 3 open, the limit is 3 (NOVA_MAX_STREAMS); "
                "try again later or another replica"
            )
            assert REFUSAL_KEY not in trailing(error)
        watches.pop(0).cancel()
        watches.append(await watch_once_freed(three))
        for call in watches:
            call.cancel()


async def test_a_reflection_stream_counts_and_frees_its_place_when_it_ends(
    serve: Callable[[ServerLayers], Any],
) -> None:
    layers = ServerLayers(streams=StreamSettings(max_per_connection=1, max_per_server=1))
    async with serve(layers) as served:
        channel = await served.connection()
        session = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
        await session.write(LIST_SERVICES)
        listed = (await session.read()).list_services_response.service
        assert "nova.user.v1.UserService" in [service.name for service in listed]
        error = await refused(channel)
        assert "limit is 1 (NOVA_MAX_STREAMS_PER_CONNECTION)" in (error.details() or "")
        await session.done_writing()
        assert await session.code() == grpc.StatusCode.OK
        (await watch_once_freed(channel)).cancel()


async def test_a_watch_that_sees_no_change_is_ended_after_the_idle_timeout(
    serve: Callable[[ServerLayers], Any],
) -> None:
    layers = ServerLayers(streams=StreamSettings(max_per_connection=1, idle_seconds=0.3))
    async with serve(layers) as served:
        channel = await served.connection()
        call = await watch(channel)
        opened = time.monotonic()
        with pytest.raises(aio.AioRpcError) as error:
            await call.read()
        assert time.monotonic() - opened >= 0.3
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert error.value.details() == (
            "idle for 0.3 s: no message either way (NOVA_STREAM_IDLE_SECONDS); open a new stream"
        )
        # Its place is free again (the limit is one stream on this connection).
        (await watch_once_freed(channel)).cancel()


async def test_each_message_a_watch_sends_keeps_it_open(
    serve: Callable[[ServerLayers], Any],
) -> None:
    layers = ServerLayers(streams=StreamSettings(idle_seconds=0.5))
    async with serve(layers) as served:
        call = await watch(await served.connection())
        health = served.running.health
        statuses = [NOT_SERVING, SERVING] * 3
        for status in statuses:  # 0.9 s in all, never 0.5 s without a message
            await asyncio.sleep(0.15)
            await health.set("", status)
            assert (await call.read()).status == status
        with pytest.raises(aio.AioRpcError) as error:
            await call.read()
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_each_message_a_client_sends_keeps_its_stream_open(
    serve: Callable[[ServerLayers], Any],
) -> None:
    layers = ServerLayers(streams=StreamSettings(idle_seconds=0.5))
    async with serve(layers) as served:
        channel = await served.connection()
        session = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
        for _ in range(6):  # 0.9 s in all
            await asyncio.sleep(0.15)
            await session.write(LIST_SERVICES)
            assert (await session.read()).HasField("list_services_response")
        assert await session.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "idle for 0.5 s" in await session.details()


async def test_the_server_caps_http2_streams_per_connection(
    serve: Callable[[ServerLayers], Any],
) -> None:
    """grpc.max_concurrent_streams as start_server sets it: past it a client's call waits
    for a stream (here, until its deadline); another connection is not held back."""
    layers = ServerLayers(streams=None, max_concurrent_streams=2)
    async with serve(layers) as served:
        channel = await served.connection()
        watches = [await watch(channel), await watch(channel)]
        with pytest.raises(aio.AioRpcError) as error:
            await watch(channel, deadline=0.3)
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        (await watch(await served.connection())).cancel()
        watches.pop().cancel()
        watches.append(await watch(channel, deadline=5))
        for call in watches:
            call.cancel()
