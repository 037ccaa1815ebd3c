"""Hedged requests for idempotent reads: a second attempt when the first is slower than p95.

A replica stalls now and then (a pause, a noisy neighbour, a cold cache); retries do not
help, since the call has not failed, only got slow. gRPC Python has no hedging at all.
Here, once a read has taken longer than the p95 latency recently observed for its method,
a second attempt goes out to another replica (the pool prefers an address this call has
not tried) and the first answer wins; the loser is cancelled. Waiting for p95 means at
most ~5% of calls are hedged, and each hedge draws a token from the retry budget, so
hedges and retries together stay within the budget's extra load.

An attempt that fails with a code that another replica may not meet (UNAVAILABLE, or a
refusal by the breaker) does not decide the call while the other attempt runs; any other
status is the answer. Latency is observed per method over the last `window` attempts;
until `min_samples` are in, no call is hedged.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import grpc
from grpc import aio

from interceptors.client.call import Invoke, OutgoingCall
from interceptors.client.retry import RetryBudget

_RECOMPUTE_EVERY = 16
"""Attempts between two recomputations of a method's percentile (a sort of the window)."""


@dataclass(frozen=True)
class HedgingSettings:
    enabled: bool = False
    percentile: float = 95.0
    min_delay_seconds: float = 0.001
    """Never hedge sooner: below this, a hedge costs more than the wait it saves."""
    window: int = 512
    min_samples: int = 32
    undecided_codes: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})

    def __post_init__(self) -> None:
        if not 0 < self.percentile < 100 or self.min_samples < 1 or self.window < 1:
            raise ValueError(f"need 0 < percentile < 100, min_samples >= 1, window >= 1: {self}")


class LatencyWindow:
    """The last `window` latencies of one method and their percentile."""

    def __init__(self, settings: HedgingSettings) -> None:
        self._samples: deque[float] = deque(maxlen=settings.window)
        self._rank = settings.percentile / 100
        self._min_samples = settings.min_samples
        self._since = 0
        self.percentile: float | None = None
        """None until min_samples latencies were observed."""

    def observe(self, seconds: float) -> None:
        self._samples.append(seconds)
        self._since += 1
        if self._since >= _RECOMPUTE_EVERY and len(self._samples) >= self._min_samples:
            ordered = sorted(self._samples)
            self.percentile = ordered[int(self._rank * (len(ordered) - 1))]
            self._since = 0


class Hedging:
    def __init__(self, settings: HedgingSettings, budget: RetryBudget) -> None:
        self._settings = settings
        self._budget = budget
        self._windows: dict[str, LatencyWindow] = {}

    async def __call__(self, call: OutgoingCall, proceed: Invoke) -> Any:
        if not self._settings.enabled or not call.idempotent:
            return await proceed(call)
        window = self._windows.get(call.method)
        if window is None:
            window = self._windows[call.method] = LatencyWindow(self._settings)
        if window.percentile is None:
            return await self._timed(window, proceed, call)
        delay = max(window.percentile, self._settings.min_delay_seconds)
        if call.timeout is not None and delay >= call.timeout:
            return await self._timed(window, proceed, call)
        started = time.monotonic()
        attempts: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(self._timed(window, proceed, call))
        }
        try:
            done, _ = await asyncio.wait(attempts, timeout=delay)
            if not done and self._budget.withdraw():
                if call.timeout is not None:
                    call = replace(call, timeout=started + call.timeout - time.monotonic())
                attempts.add(asyncio.ensure_future(self._timed(window, proceed, call)))
            return await self._first_answer(attempts)
        finally:
            for attempt in attempts:
                attempt.cancel()

    async def _first_answer(self, attempts: set[asyncio.Future[Any]]) -> Any:
        pending = attempts
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            outcomes = {attempt: attempt.exception() for attempt in done}
            for attempt, error in outcomes.items():
                if error is None:
                    return attempt.result()
            for error in outcomes.values():
                if error is not None and (not pending or not self._undecided(error)):
                    raise error

    def _undecided(self, error: BaseException) -> bool:
        return isinstance(error, aio.AioRpcError) and error.code() in self._settings.undecided_codes

    @staticmethod
    async def _timed(window: LatencyWindow, proceed: Invoke, call: OutgoingCall) -> Any:
        """Observes an attempt's latency when it answers, and when it is cancelled for being
        slow (a lower bound, but leaving slow attempts out would drag the percentile down)."""
        started = time.monotonic()
        try:
            response = await proceed(call)
        except asyncio.CancelledError:
            window.observe(time.monotonic() - started)
            raise
        window.observe(time.monotonic() - started)
        return response
