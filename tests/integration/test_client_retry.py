"""Retries against a real server: reads only, never refusals, within the budget and deadline."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc import aio

from interceptors.client.breaker import BreakerSettings, CircuitOpen
from interceptors.client.retry import BudgetSettings, RetrySettings
from interceptors.client.stack import ClientSettings, connect, reads
from nova.user.v1 import user_pb2, user_pb2_grpc
from tests.integration.test_client_fakes import USER_SERVICE, Failure, replica

GET = user_pb2.GetUserRequest(handle="grace")
UNAVAILABLE = Failure(grpc.StatusCode.UNAVAILABLE)
QUICK = RetrySettings(max_attempts=3, initial_backoff_seconds=0.001)
"""Retries without waiting to speak of, so tests stay fast."""
SLACK = 0.1
"""What a busy machine may add to a deadline before the caller gets its answer."""
LENIENT = BreakerSettings(failures=10_000)
"""A breaker that stays out of the way of the retry under test."""


def settings(
    retry: RetrySettings = QUICK,
    breaker: BreakerSettings = LENIENT,
    budget: BudgetSettings | None = None,
) -> ClientSettings:
    return ClientSettings(retry=retry, breaker=breaker, budget=budget or BudgetSettings())


async def test_a_read_is_retried_on_unavailable_and_succeeds() -> None:
    async with (
        replica() as backend,
        connect(
            "users", [backend.address], idempotent=reads(USER_SERVICE), settings=settings()
        ) as client,
    ):
        backend.servicer.failures = [UNAVAILABLE, UNAVAILABLE]
        reply = await client.stub(user_pb2_grpc.UserServiceStub).GetUser(GET, timeout=1)
        assert reply.user.handle == "grace"
        assert backend.servicer.count("GetUser") == 3


async def test_a_write_is_never_retried() -> None:
    async with (
        replica() as backend,
        connect(
            "users", [backend.address], idempotent=reads(USER_SERVICE), settings=settings()
        ) as client,
    ):
        backend.servicer.failures = [UNAVAILABLE]
        with pytest.raises(aio.AioRpcError) as failed:
            await client.stub(user_pb2_grpc.UserServiceStub).UpdateProfile(
                user_pb2.UpdateProfileRequest(), timeout=1
            )
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert backend.servicer.count("UpdateProfile") == 1


@pytest.mark.parametrize(
    "refusal",
    [
        Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, pushback_ms=200),
        Failure(grpc.StatusCode.UNAVAILABLE, pushback_ms=0),
    ],
)
async def test_a_limiter_refusal_is_never_retried(refusal: Failure) -> None:
    retryable = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
    retry = RetrySettings(initial_backoff_seconds=0.001, retryable_codes=retryable)
    async with (
        replica() as backend,
        connect(
            "users", [backend.address], idempotent=reads(USER_SERVICE), settings=settings(retry)
        ) as client,
    ):
        backend.servicer.failures = [refusal]
        with pytest.raises(aio.AioRpcError) as failed:
            await client.stub(user_pb2_grpc.UserServiceStub).GetUser(GET, timeout=1)
        assert failed.value.code() == refusal.code
        assert backend.servicer.count("GetUser") == 1


async def test_a_breaker_refusal_is_never_retried() -> None:
    retry = RetrySettings(max_attempts=5, initial_backoff_seconds=0.001)
    async with (
        replica() as backend,
        connect(
            "users",
            [backend.address],
            idempotent=reads(USER_SERVICE),
            settings=settings(retry, BreakerSettings(failures=2, reset_seconds=60)),
        ) as client,
    ):
        backend.servicer.failures = [UNAVAILABLE] * 5
        started = time.monotonic()
        with pytest.raises(CircuitOpen):
            await client.stub(user_pb2_grpc.UserServiceStub).GetUser(GET, timeout=5)
        assert time.monotonic() - started < 0.5
        assert backend.servicer.count("GetUser") == 2


async def test_the_budget_caps_retries_against_a_failing_backend() -> None:
    budget = BudgetSettings(ratio=0.1, min_per_second=0, burst=2)
    async with (
        replica() as backend,
        connect(
            "users",
            [backend.address],
            idempotent=reads(USER_SERVICE),
            settings=settings(budget=budget),
        ) as client,
    ):
        users = client.stub(user_pb2_grpc.UserServiceStub)
        backend.servicer.failures = [UNAVAILABLE] * 10_000
        for _ in range(200):
            with pytest.raises(aio.AioRpcError):
                await users.GetUser(GET, timeout=1)
        retries = backend.servicer.count("GetUser") - 200
        # The 2 tokens it starts with, then one per 10 calls: never the 400 that
        # max_attempts=3 alone would allow.
        assert 2 + 19 <= retries <= 2 + 20


async def test_no_retry_runs_past_the_callers_deadline() -> None:
    retry = RetrySettings(max_attempts=10, initial_backoff_seconds=0.005)
    async with (
        replica() as backend,
        connect(
            "users", [backend.address], idempotent=reads(USER_SERVICE), settings=settings(retry)
        ) as client,
    ):
        backend.servicer.delay = 0.06
        backend.servicer.failures = [UNAVAILABLE] * 10
        started = time.monotonic()
        with pytest.raises(aio.AioRpcError) as failed:
            await client.stub(user_pb2_grpc.UserServiceStub).GetUser(GET, timeout=0.1)
        assert time.monotonic() - started < 0.1 + SLACK
        assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        _, second = backend.servicer.seen
        assert second.time_remaining is not None
        assert second.time_remaining < 0.1 - 0.06
