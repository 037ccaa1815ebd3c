"""Hedged reads against two real replicas, one of which turns slow."""

from __future__ import annotations

import asyncio
import time

from interceptors.client.channel_pool import PoolSettings
from interceptors.client.hedging import HedgingSettings
from interceptors.client.retry import BudgetSettings
from interceptors.client.stack import Client, ClientSettings, connect, reads
from nova.user.v1 import user_pb2, user_pb2_grpc
from tests.integration.test_client_fakes import USER_SERVICE, FakeUsers, Metrics, replica

GET = user_pb2.GetUserRequest(handle="grace")
HEDGING = HedgingSettings(enabled=True, min_samples=16)
WARM_UP_CALLS = HEDGING.min_samples + 16


def hedged(budget: BudgetSettings) -> ClientSettings:
    return ClientSettings(pool=PoolSettings(channels=2), hedging=HEDGING, budget=budget)


async def warm_up(client: Client) -> None:
    """Enough fast calls for the client to know its p95."""
    users = client.stub(user_pb2_grpc.UserServiceStub)
    for _ in range(WARM_UP_CALLS):
        await users.GetUser(GET, timeout=1)


async def test_a_hedge_to_the_other_replica_answers_for_the_slow_one() -> None:
    async with (
        replica(FakeUsers("fast")) as fast,
        replica(FakeUsers("slow")) as slow,
        connect(
            "users",
            [fast.address, slow.address],
            idempotent=reads(USER_SERVICE),
            settings=hedged(BudgetSettings(burst=50)),
        ) as client,
    ):
        await warm_up(client)
        slow.servicer.delay = 1.0
        users = client.stub(user_pb2_grpc.UserServiceStub)
        sent_before = len(fast.servicer.seen) + len(slow.servicer.seen)

        started = time.monotonic()
        replies = [await users.GetUser(GET, timeout=2) for _ in range(20)]

        # Half the calls start on the slow replica; had one of them not been hedged, it
        # alone would have taken 1 s.
        assert time.monotonic() - started < 1.0
        assert {reply.user.id for reply in replies} == {"fast"}
        hedges = len(fast.servicer.seen) + len(slow.servicer.seen) - sent_before - 20
        assert 10 <= hedges <= 20


async def test_writes_are_not_hedged_and_the_budget_bounds_hedges() -> None:
    metrics = Metrics()
    budget = BudgetSettings(ratio=0, min_per_second=0, burst=1)
    async with (
        replica(FakeUsers("fast")) as fast,
        replica(FakeUsers("slow")) as slow,
        connect(
            "users",
            [fast.address, slow.address],
            idempotent=reads(USER_SERVICE),
            settings=hedged(budget),
            meter=metrics.meter,
        ) as client,
    ):
        await warm_up(client)
        users = client.stub(user_pb2_grpc.UserServiceStub)
        fast.servicer.delay = slow.servicer.delay = 0.05
        await asyncio.gather(
            *(users.UpdateProfile(user_pb2.UpdateProfileRequest(), timeout=1) for _ in range(4))
        )
        assert fast.servicer.count("UpdateProfile") + slow.servicer.count("UpdateProfile") == 4

        await asyncio.gather(*(users.GetUser(GET, timeout=1) for _ in range(6)))
        # Each of the 6 slow reads wants a hedge; the one token (spent then, or on a warm-up
        # call a little slower than p95) allows a single one.
        assert metrics.total("nova.client.attempts") == WARM_UP_CALLS + 4 + 6 + 1
