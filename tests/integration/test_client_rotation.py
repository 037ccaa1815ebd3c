"""Channel rotation under steady load, and replacement of a channel that failed."""

from __future__ import annotations

import asyncio

import pytest
from grpc import aio

from interceptors.client.channel_pool import PoolSettings
from interceptors.client.stack import ClientSettings, connect, reads
from nova.user.v1 import user_pb2, user_pb2_grpc
from tests.bench.loadgen import Load, generate
from tests.integration.test_client_fakes import USER_SERVICE, replica

GET = user_pb2.GetUserRequest(handle="grace")


async def test_channels_rotate_under_load_without_a_failed_call() -> None:
    pool = PoolSettings(channels=4, max_age_seconds=0.3)
    async with (
        replica() as backend,
        connect(
            "users",
            [backend.address],
            idempotent=reads(USER_SERVICE),
            settings=ClientSettings(pool=pool),
        ) as client,
    ):
        users = client.stub(user_pb2_grpc.UserServiceStub)

        async def get_user() -> None:
            # A generous deadline: this is about rotation failing calls, not about latency on a
            # busy machine.
            await users.GetUser(GET, timeout=5)

        result = await generate(get_user, Load(rate=300, duration=3, warmup=0, max_outstanding=900))

        assert result.errors == {}
        assert result.succeeded == 900
        # 4 channels, each renewed every 0.24-0.3 s for 3 s.
        assert client.pool.renewed["age"] >= 30
        connections = {seen.peer for seen in backend.servicer.seen}
        assert len(connections) >= 30


async def test_a_failed_channel_is_replaced() -> None:
    pool = PoolSettings(channels=2, failed_replace_seconds=0.1, check_seconds=0.02)
    async with (
        replica() as backend,
        connect("users", [backend.address], settings=ClientSettings(pool=pool)) as client,
    ):
        users = client.stub(user_pb2_grpc.UserServiceStub)
        await users.GetUser(GET, timeout=1)
        await backend.stop()
        for _ in range(2):
            with pytest.raises(aio.AioRpcError):
                await users.GetUser(GET, timeout=1)
        await asyncio.sleep(0.3)
        assert client.pool.renewed["failure"] >= 2
        await backend.start()
        reply = await users.GetUser(GET, timeout=1)
        assert reply.user.handle == "grace"
