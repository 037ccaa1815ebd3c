"""Retries of idempotent reads: backoff with jitter, inside the deadline and a retry budget.

A retry is only safe for a method declared idempotent, only useful for a failure that a
second attempt may not meet (UNAVAILABLE: a connection or replica went away), and only
harmless while it stays a small share of the load. Per-call attempt limits alone do not
ensure that: when a dependency is down, every call retrying N times multiplies the load
on it by N just when it can least take it. So retries draw on a budget shared by every
call to the target (Finagle's retry budget): each call deposits `ratio` of a token, each
retry or hedge withdraws a whole one, so they add at most ~`ratio` extra load, plus a
trickle of `min_per_second` that lets a quiet client still retry.

Backoff is "full jitter" (a uniform draw below the exponential bound), which spreads the
retries of many callers that failed together. A retry is never started when its backoff
would run past the caller's deadline, and each attempt gets only the time that is left.
A status carrying `grpc-retry-pushback-ms` is a deliberate refusal (a server's limiter, or
our own circuit breaker) and is never retried.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, replace
from typing import Any, cast

import grpc
from grpc import aio

from interceptors.client.call import Invoke, OutgoingCall
from interceptors.context import PUSHBACK_KEY

_MILLI = 1000
"""The budget counts thousandths of a token, so that ten deposits of 0.1 make exactly one."""


@dataclass(frozen=True)
class BudgetSettings:
    ratio: float = 0.1
    """Retries and hedges allowed per call, on average."""
    min_per_second: float = 1.0
    burst: float = 10.0
    """Most tokens saved up (and the tokens a new client starts with)."""

    def __post_init__(self) -> None:
        if self.ratio < 0 or self.min_per_second < 0 or self.burst < 1:
            raise ValueError(f"need ratio >= 0, min_per_second >= 0, burst >= 1: {self}")


class RetryBudget:
    """Tokens shared by the retries and hedges of every call to one target."""

    def __init__(self, settings: BudgetSettings) -> None:
        self._deposit = round(settings.ratio * _MILLI)
        self._trickle = settings.min_per_second * _MILLI
        self._cap = round(settings.burst * _MILLI)
        self._balance = self._cap
        self._refilled = time.monotonic()

    def deposit(self) -> None:
        """One call was made."""
        self._balance = min(self._cap, self._balance + self._deposit)

    def withdraw(self) -> bool:
        """Takes a token for one extra attempt; False when the budget is spent."""
        now = time.monotonic()
        trickle = int((now - self._refilled) * self._trickle)
        if trickle:
            self._balance = min(self._cap, self._balance + trickle)
            self._refilled = now
        if self._balance < _MILLI:
            return False
        self._balance -= _MILLI
        return True


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 3
    initial_backoff_seconds: float = 0.025
    max_backoff_seconds: float = 1.0
    multiplier: float = 2.0
    retryable_codes: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.initial_backoff_seconds < 0 or self.multiplier < 1:
            raise ValueError(f"need max_attempts >= 1, backoff >= 0, multiplier >= 1: {self}")


def refused(error: aio.AioRpcError) -> bool:
    """Whether the status was a deliberate refusal (it names a pushback)."""
    trailing = cast(aio.Metadata | None, error.trailing_metadata())
    return any(key == PUSHBACK_KEY for key, _ in trailing or ())


class Retry:
    def __init__(self, settings: RetrySettings, budget: RetryBudget) -> None:
        self._settings = settings
        self._budget = budget

    async def __call__(self, call: OutgoingCall, proceed: Invoke) -> Any:
        self._budget.deposit()
        if not call.idempotent or self._settings.max_attempts == 1:
            return await proceed(call)
        deadline = None if call.timeout is None else time.monotonic() + call.timeout
        attempt = 1
        while True:
            try:
                return await proceed(call)
            except aio.AioRpcError as error:
                delay = self._backoff(attempt)
                if not self._may_retry(error, attempt, delay, deadline):
                    raise
            await asyncio.sleep(delay)
            attempt += 1
            if deadline is not None:
                call = replace(call, timeout=deadline - time.monotonic())

    def _backoff(self, attempt: int) -> float:
        settings = self._settings
        bound = settings.initial_backoff_seconds * settings.multiplier ** (attempt - 1)
        return random.uniform(0, min(settings.max_backoff_seconds, bound))

    def _may_retry(
        self, error: aio.AioRpcError, attempt: int, delay: float, deadline: float | None
    ) -> bool:
        return (
            attempt < self._settings.max_attempts
            and error.code() in self._settings.retryable_codes
            and not refused(error)
            and (deadline is None or time.monotonic() + delay < deadline)
            and self._budget.withdraw()
        )
