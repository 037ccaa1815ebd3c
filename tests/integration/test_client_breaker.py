"""The circuit breaker against real servers: a dead backend, a hung one, and 1,000 callers
arriving together when it half-opens."""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc
import pybreaker
import pytest
from grpc import aio
from structlog.testing import capture_logs

from interceptors.client.breaker import BreakerSettings, CircuitOpen
from interceptors.client.channel_pool import PoolSettings
from interceptors.client.retry import RetrySettings
from interceptors.client.stack import ClientSettings, connect, reads
from nova.user.v1 import user_pb2, user_pb2_grpc
from tests.integration.test_client_fakes import USER_SERVICE, Failure, Metrics, replica

GET = user_pb2.GetUserRequest(handle="grace")
SLACK = 0.1
"""What a busy machine may add to a deadline before the caller gets its answer."""


def settings(breaker: BreakerSettings) -> ClientSettings:
    """No retries, so each call is one attempt; failed channels renewed quickly."""
    return ClientSettings(
        pool=PoolSettings(failed_replace_seconds=0.1),
        retry=RetrySettings(max_attempts=1),
        breaker=breaker,
    )


async def test_dead_backend_opens_the_breaker_then_a_probe_closes_it() -> None:
    metrics = Metrics()
    async with (
        replica() as backend,
        connect(
            "users",
            [backend.address],
            idempotent=reads(USER_SERVICE),
            settings=settings(BreakerSettings(failures=3, reset_seconds=0.3)),
            meter=metrics.meter,
        ) as client,
    ):
        users = client.stub(user_pb2_grpc.UserServiceStub)
        await users.GetUser(GET, timeout=1)
        await backend.stop()

        with capture_logs() as logs:
            for _ in range(3):
                started = time.monotonic()
                with pytest.raises(aio.AioRpcError) as failed:
                    await users.GetUser(GET, timeout=0.5)
                assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
                assert not isinstance(failed.value, CircuitOpen)
                assert time.monotonic() - started < 0.5 + SLACK
        assert client.breaker.state == pybreaker.STATE_OPEN
        opened = {"event": "circuit breaker state changed", "new": "open", "target": "users"}
        assert any(opened.items() <= line.items() for line in logs)

        sent = metrics.total("nova.client.attempts")
        took = []
        for _ in range(200):
            started = time.perf_counter()
            with pytest.raises(CircuitOpen) as refused:
                await users.GetUser(GET, timeout=0.5)
            took.append(time.perf_counter() - started)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "circuit breaker for users is open" in (refused.value.details() or "")
        # Typically ~20 µs each; the 10% slack is for a busy machine descheduling this
        # process mid-call, which no code can prevent.
        assert sorted(took)[180] < 0.001
        assert metrics.total("nova.client.attempts") == sent

        await backend.start()
        deadline = time.monotonic() + 5
        while client.breaker.state != pybreaker.STATE_CLOSED:
            assert time.monotonic() < deadline, "the breaker never closed"
            await asyncio.sleep(0.02)
            with contextlib.suppress(aio.AioRpcError):
                await users.GetUser(GET, timeout=0.5)
        reply = await users.GetUser(GET, timeout=1)
        assert reply.user.handle == "grace"
        assert metrics.points("nova.client.breaker.state")[0][1] == 0


async def test_a_hung_backend_costs_callers_their_deadline_and_probes_their_own() -> None:
    async with (
        replica() as backend,
        connect(
            "users",
            [backend.address],
            settings=settings(
                BreakerSettings(failures=2, reset_seconds=0.1, probe_timeout_seconds=0.2)
            ),
        ) as client,
    ):
        users = client.stub(user_pb2_grpc.UserServiceStub)
        backend.servicer.delay = 5
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(aio.AioRpcError) as late:
                await users.GetUser(GET, timeout=0.15)
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - started < 0.15 + SLACK
        assert client.breaker.state == pybreaker.STATE_OPEN

        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(aio.AioRpcError) as probe:
            await users.GetUser(GET, timeout=30)
        assert probe.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 0.2 + SLACK
        assert client.breaker.state == pybreaker.STATE_OPEN


async def test_answers_do_not_count_as_failures() -> None:
    answers = [
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        # A bug that one request meets is not the target being down (one caller could
        # otherwise open the breaker for everyone by resending it).
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    ]
    failures = [
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ]
    async with (
        replica() as backend,
        connect(
            "users", [backend.address], settings=settings(BreakerSettings(failures=3))
        ) as client,
    ):
        users = client.stub(user_pb2_grpc.UserServiceStub)
        backend.servicer.failures = [Failure(code) for code in answers * 2 + failures]
        for code in answers * 2 + failures:
            assert client.breaker.state == pybreaker.STATE_CLOSED
            with pytest.raises(aio.AioRpcError) as failed:
                await users.UpdateProfile(user_pb2.UpdateProfileRequest(), timeout=1)
            assert failed.value.code() == code
        assert client.breaker.state == pybreaker.STATE_OPEN


@pytest.mark.parametrize("probes", [1, 3])
async def test_exactly_the_configured_probes_reach_the_server(probes: int) -> None:
    async with (
        replica() as backend,
        connect(
            "users",
            [backend.address],
            idempotent=reads(USER_SERVICE),
            settings=settings(BreakerSettings(failures=2, reset_seconds=0.2, probes=probes)),
        ) as client,
    ):
        users = client.stub(user_pb2_grpc.UserServiceStub)
        backend.servicer.failures = [Failure(grpc.StatusCode.UNAVAILABLE)] * 2
        for _ in range(2):
            with pytest.raises(aio.AioRpcError):
                await users.GetUser(GET, timeout=1)
        assert client.breaker.state == pybreaker.STATE_OPEN
        await asyncio.sleep(0.2)
        before = backend.servicer.count("GetUser")
        backend.servicer.delay = 0.05

        outcomes = await asyncio.gather(
            *(users.GetUser(GET, timeout=2) for _ in range(1000)), return_exceptions=True
        )

        assert backend.servicer.count("GetUser") - before == probes
        assert sum(isinstance(outcome, user_pb2.GetUserResponse) for outcome in outcomes) == probes
        assert sum(isinstance(outcome, CircuitOpen) for outcome in outcomes) == 1000 - probes
        assert client.breaker.state == pybreaker.STATE_CLOSED
