"""Client-side balancing over real in-process replicas: calls spread over every replica; one
whose health says NOT_SERVING, or that answered UNAVAILABLE, or that stopped, is taken out
without a read failing, and comes back once it serves again; dns:/// names resolve to every
replica and are resolved again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

import grpc
import pytest
from grpc import aio
from opentelemetry import metrics

from interceptors.client.breaker import BreakerSettings
from interceptors.client.channel_pool import ChannelPool, PoolSettings
from interceptors.client.replicas import EjectionSettings
from interceptors.client.stack import Client, ClientSettings, chain, connect, reads
from interceptors.client.targets import Endpoint
from nova.user.v1 import user_pb2, user_pb2_grpc
from tests.integration.test_client_fakes import USER_SERVICE, Failure, FakeUsers, Replica, replica

GET = user_pb2.GetUserRequest(handle="grace")
FAST = PoolSettings(
    channels=2,
    check_seconds=0.02,
    failed_replace_seconds=0.1,
    health_retry_max_seconds=0.1,
    resolve_seconds=0.1,
    ejection=EjectionSettings(base_seconds=0.2, max_seconds=0.4, probe_timeout_seconds=0.5),
)
SETTINGS = ClientSettings(pool=FAST)


@asynccontextmanager
async def replicas(count: int) -> AsyncIterator[list[Replica]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(replica(FakeUsers(name=f"r{index}")))
            for index in range(count)
        ]


def client(target: str, settings: ClientSettings = SETTINGS) -> Client:
    return connect("users", [target], idempotent=reads(USER_SERVICE), settings=settings)


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Waits for what the pool does in the background (a watch, a probe, a resolution)."""
    give_up = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < give_up, "the pool did not get there in time"
        await asyncio.sleep(0.01)


def usable(users: Client) -> set[str]:
    return {replica.address for replica in users.pool.replicas if replica.usable()}


async def get_many(users: Client, count: int) -> list[str]:
    """Which replica answered each of `count` reads, one after another."""
    stub = users.stub(user_pb2_grpc.UserServiceStub)
    return [(await stub.GetUser(GET, timeout=2)).user.id for _ in range(count)]


async def test_calls_take_turns_over_every_replica_of_a_comma_separated_target() -> None:
    async with replicas(3) as running, client(",".join(r.address for r in running)) as users:
        answered = await get_many(users, 30)
        # 2 channels shared out over 3 replicas still gives each one.
        assert [len(replica.slots) for replica in users.pool.replicas] == [1, 1, 1]
    assert {name: answered.count(name) for name in set(answered)} == {"r0": 10, "r1": 10, "r2": 10}


async def test_a_draining_replica_is_out_while_not_serving_and_back_when_serving() -> None:
    async with replicas(2) as (first, second), client(f"{first.address},{second.address}") as users:
        await second.set_serving(False)
        await until(lambda: usable(users) == {first.address})
        assert set(await get_many(users, 10)) == {"r0"}
        await second.set_serving(True)
        await until(lambda: usable(users) == {first.address, second.address})
        assert set(await get_many(users, 10)) == {"r0", "r1"}


async def test_an_unavailable_answer_ejects_the_replica_retries_the_read_and_probes_back() -> None:
    # The breaker would open at the first failure it counted: one replica failing must not
    # count, since the target still has another.
    settings = replace(SETTINGS, breaker=BreakerSettings(failures=1))
    async with (
        replicas(2) as (first, second),
        client(f"{first.address},{second.address}", settings) as users,
    ):
        second.servicer.failures = [Failure(grpc.StatusCode.UNAVAILABLE)]
        answered = await get_many(users, 6)
        # Its health still says SERVING: it is out for its ejection, not for its health.
        assert users.pool.ejections == 1
        assert answered == ["r0"] * 6
        assert second.servicer.count("GetUser") == 1
        assert users.breaker.state == "closed"
        await until(lambda: usable(users) == {first.address, second.address})
        assert set(await get_many(users, 4)) == {"r0", "r1"}


async def test_a_refusal_with_a_pushback_does_not_eject() -> None:
    async with replicas(2) as (first, second), client(f"{first.address},{second.address}") as users:
        second.servicer.failures = [Failure(grpc.StatusCode.UNAVAILABLE, pushback_ms=100)]
        stub = users.stub(user_pb2_grpc.UserServiceStub)
        await stub.GetUser(GET, timeout=2)
        with pytest.raises(aio.AioRpcError) as refused:
            await stub.GetUser(GET, timeout=2)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert users.pool.ejections == 0
        assert usable(users) == {first.address, second.address}


async def test_a_stopped_replica_fails_no_read_and_serves_again_after_its_restart() -> None:
    async with replicas(2) as (first, second), client(f"{first.address},{second.address}") as users:
        stub = users.stub(user_pb2_grpc.UserServiceStub)
        await get_many(users, 4)
        await second.stop()
        # 40 reads, 4 at a time: those that reach the stopped one go again to the other.
        answered: set[str] = set()
        for _ in range(10):
            answers = await asyncio.gather(*(stub.GetUser(GET, timeout=2) for _ in range(4)))
            answered |= {answer.user.id for answer in answers}
        assert answered == {"r0"}
        await until(lambda: usable(users) == {first.address})
        await second.start()
        await until(lambda: usable(users) == {first.address, second.address})
        assert "r1" in await get_many(users, 4)


class FakeDns:
    """Stands in for a DNS server (none can run here): what each name resolves to now."""

    def __init__(self, answers: dict[str, tuple[Endpoint, ...]]) -> None:
        self.answers = answers
        self.asked = 0

    async def __call__(self, name: str) -> tuple[Endpoint, ...]:
        self.asked += 1
        found = self.answers.get(name, ())
        if not found:
            raise OSError(f"{name}: no such name")
        return found


async def test_a_dns_target_follows_its_answers_and_keeps_the_last_one_through_an_outage() -> None:
    name = "dns:///users.nova.svc:50051"
    async with replicas(3) as running:
        endpoints = [Endpoint(r.address, "users.nova.svc:50051") for r in running]
        dns = FakeDns({name: tuple(endpoints[:2])})
        pool = ChannelPool([name], FAST, resolver=dns)
        users = Client(
            "users", pool, chain("users", SETTINGS, metrics.get_meter("test")), reads(USER_SERVICE)
        )
        async with users:
            assert set(await get_many(users, 4)) == {"r0", "r1"}
            dns.answers[name] = (endpoints[1], endpoints[2])  # r0's pod went, r2's came
            await until(
                lambda: (
                    {r.address for r in pool.replicas} == {running[1].address, running[2].address}
                )
            )
            assert set(await get_many(users, 4)) == {"r1", "r2"}
            asked = dns.asked
            dns.answers[name] = ()  # the DNS server is unreachable
            await until(lambda: dns.asked > asked + 2)
            assert set(await get_many(users, 4)) == {"r1", "r2"}


async def test_a_name_that_never_resolves_fails_calls_unavailable_with_the_reason() -> None:
    pool = ChannelPool(["dns:///nowhere.nova.svc:50051"], FAST, resolver=FakeDns({}))
    users = Client("users", pool, [], frozenset())
    async with users:
        stub = users.stub(user_pb2_grpc.UserServiceStub)
        with pytest.raises(aio.AioRpcError) as failed:
            await stub.GetUser(GET, timeout=1)
        assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "nowhere.nova.svc:50051: no such name" in (failed.value.details() or "")


async def test_a_real_dns_name_reaches_the_replica_by_its_resolved_address() -> None:
    async with replica() as running, client(f"dns:///localhost:{running.port}") as users:
        assert (await get_many(users, 2)) == ["replica", "replica"]
        assert [r.endpoint for r in users.pool.replicas] == [
            Endpoint(f"127.0.0.1:{running.port}", f"localhost:{running.port}")
        ]
