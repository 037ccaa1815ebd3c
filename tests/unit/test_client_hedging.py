"""Hedging without a network: the latency window and which attempt's outcome wins."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc import aio

from interceptors.client.call import OutgoingCall
from interceptors.client.hedging import Hedging, HedgingSettings, LatencyWindow
from interceptors.client.retry import BudgetSettings, RetryBudget

SETTINGS = HedgingSettings(enabled=True, min_samples=16, min_delay_seconds=0.001)
CALL = OutgoingCall("/test.Service/Get", b"", None, None, 5.0, (), idempotent=True)


def error(code: grpc.StatusCode) -> aio.AioRpcError:
    return aio.AioRpcError(code, aio.Metadata(), aio.Metadata(), code.name, None)


def test_the_window_reports_its_percentile_once_it_has_enough_samples() -> None:
    window = LatencyWindow(HedgingSettings(min_samples=32, window=128))
    for milliseconds in range(1, 32):
        window.observe(milliseconds / 1000)
    assert window.percentile is None
    window.observe(0.032)
    assert window.percentile == pytest.approx(0.030)
    for milliseconds in range(33, 129):
        window.observe(milliseconds / 1000)
    assert window.percentile == pytest.approx(0.121)


async def hedging(budget: float = 10) -> Hedging:
    """A hedger that has seen enough ~instant calls to hedge after min_delay_seconds."""
    hedger = Hedging(SETTINGS, RetryBudget(BudgetSettings(burst=budget, min_per_second=0)))
    for _ in range(SETTINGS.min_samples):
        await hedger(CALL, instant)
    return hedger


async def instant(call: OutgoingCall) -> Any:
    return None


def attempts(*outcomes: tuple[float, Any]) -> tuple[list[OutgoingCall], Any]:
    """A `proceed` whose n-th attempt waits outcomes[n][0] s, then returns or raises [1]."""
    sent: list[OutgoingCall] = []

    async def proceed(call: OutgoingCall) -> Any:
        delay, outcome = outcomes[len(sent)]
        sent.append(call)
        await asyncio.sleep(delay)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return sent, proceed


async def test_a_slow_first_attempt_loses_to_the_hedge() -> None:
    sent, proceed = attempts((1.0, "first"), (0.0, "hedge"))
    assert await (await hedging())(CALL, proceed) == "hedge"
    assert len(sent) == 2
    assert sent[1].timeout is not None
    assert sent[1].timeout < 5.0


async def test_an_unavailable_attempt_waits_for_the_other_one() -> None:
    _, proceed = attempts((0.005, error(grpc.StatusCode.UNAVAILABLE)), (0.02, "hedge"))
    assert await (await hedging())(CALL, proceed) == "hedge"


async def test_any_other_status_is_the_answer() -> None:
    _, proceed = attempts((1.0, "first"), (0.0, error(grpc.StatusCode.NOT_FOUND)))
    with pytest.raises(aio.AioRpcError) as answered:
        await (await hedging())(CALL, proceed)
    assert answered.value.code() == grpc.StatusCode.NOT_FOUND


async def test_without_a_token_there_is_no_hedge() -> None:
    hedger = await hedging(budget=1)
    _, proceed = attempts((0.01, "first"), (0.0, "hedge"))
    assert await hedger(CALL, proceed) == "hedge"
    sent, proceed = attempts((0.01, "first"), (0.0, "hedge"))
    assert await hedger(CALL, proceed) == "first"
    assert len(sent) == 1
