"""The breaker's own logic, without a network: probes, stale outcomes, refusals."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import grpc
import pybreaker
import pytest
from grpc import aio

from interceptors.client.breaker import Breaker, BreakerSettings, CircuitOpen
from interceptors.client.call import OutgoingCall
from interceptors.context import PUSHBACK_KEY, REFUSAL_CALLER, REFUSAL_KEY, REFUSAL_METHOD

CALL = OutgoingCall("/test.Service/Get", b"", None, None, 5.0, (), idempotent=True)


def unavailable() -> aio.AioRpcError:
    return aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, aio.Metadata(), aio.Metadata(), "x", None)


async def fail(call: OutgoingCall) -> Any:
    raise unavailable()


async def succeed(call: OutgoingCall) -> Any:
    return "ok"


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        monkeypatch.setattr("interceptors.client.breaker.time.monotonic", lambda: self.now)


async def open_breaker(breaker: Breaker, failures: int) -> None:
    for _ in range(failures):
        with pytest.raises(aio.AioRpcError):
            await breaker(CALL, fail)
    assert breaker.state == pybreaker.STATE_OPEN


async def test_a_refusal_names_the_target_and_asks_for_no_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(monkeypatch)
    breaker = Breaker("users", BreakerSettings(failures=2, reset_seconds=3))
    await open_breaker(breaker, 2)
    clock.now += 1
    with pytest.raises(CircuitOpen) as refused:
        await breaker(CALL, succeed)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == (
        "circuit breaker for users is open after 2 consecutive failures; next probe in 2.00 s"
    )
    assert list(cast(aio.Metadata, refused.value.trailing_metadata())) == [(PUSHBACK_KEY, "2000")]


async def test_an_outcome_from_before_the_breaker_opened_is_not_taken_for_a_probes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(monkeypatch)
    breaker = Breaker("users", BreakerSettings(failures=2, reset_seconds=1))
    slow = breaker.admit()
    await open_breaker(breaker, 2)
    clock.now += 1
    probe = breaker.admit()
    assert probe.probe
    assert breaker.state == pybreaker.STATE_HALF_OPEN
    breaker.record(slow, unavailable())
    assert breaker.state == pybreaker.STATE_HALF_OPEN
    breaker.record(probe, None)
    assert breaker.state == pybreaker.STATE_CLOSED


async def test_a_cancelled_probe_frees_its_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch)
    breaker = Breaker("users", BreakerSettings(failures=1, reset_seconds=1))
    await open_breaker(breaker, 1)
    clock.now += 1
    started = asyncio.Event()

    async def hang(call: OutgoingCall) -> Any:
        started.set()
        await asyncio.sleep(60)

    probe = asyncio.ensure_future(breaker(CALL, hang))
    await started.wait()
    with pytest.raises(CircuitOpen, match="half-open"):
        await breaker(CALL, succeed)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert await breaker(CALL, succeed) == "ok"
    assert breaker.state == pybreaker.STATE_CLOSED


async def test_the_probe_gets_the_probe_timeout_not_the_callers() -> None:
    breaker = Breaker("users", BreakerSettings(failures=1, reset_seconds=0.01))
    await open_breaker(breaker, 1)
    await asyncio.sleep(0.02)
    sent: list[OutgoingCall] = []

    async def record(call: OutgoingCall) -> Any:
        sent.append(call)
        return "ok"

    await breaker(CALL, record)
    assert sent[0].timeout == BreakerSettings().probe_timeout_seconds


@pytest.mark.parametrize("scope", [REFUSAL_CALLER, REFUSAL_METHOD])
async def test_a_refusal_of_one_caller_or_one_method_never_counts_against_the_target(
    scope: str,
) -> None:
    breaker = Breaker("users", BreakerSettings(failures=2))
    marked = aio.AioRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        aio.Metadata(),
        aio.Metadata((PUSHBACK_KEY, "5000"), (REFUSAL_KEY, scope)),
        "too many log-in attempts from your address; try again in 5 s",
        None,
    )

    async def refuse(call: OutgoingCall) -> Any:
        raise marked

    for _ in range(50):
        with pytest.raises(aio.AioRpcError) as refused:
            await breaker(CALL, refuse)
        assert refused.value is marked
    assert breaker.state == pybreaker.STATE_CLOSED
    assert await breaker(CALL, succeed) == "ok"

    unmarked = aio.AioRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, aio.Metadata(), aio.Metadata(), "overloaded", None
    )

    async def overloaded(call: OutgoingCall) -> Any:
        raise unmarked

    for _ in range(2):
        with pytest.raises(aio.AioRpcError):
            await breaker(CALL, overloaded)
    assert breaker.state == pybreaker.STATE_OPEN, "the server's own overload still counts"
