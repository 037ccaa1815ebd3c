"""Concurrency limiters, driven by synthetic calls on a clock of the test's own."""

from __future__ import annotations

import pytest

from interceptors.server.limiters import (
    AdaptiveLimiter,
    AdaptiveSettings,
    FixedLimiter,
    Limiter,
    Outcome,
)

MS = 0.001


class Driver:
    """Runs rounds of calls: as many start as the limit admits, and all end `latency` later."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self.now = 0.0

    def round(
        self, latency: float, outcome: Outcome = Outcome.SUCCESS, calls: int | None = None
    ) -> int:
        started = self.now
        admitted = 0
        while (calls is None or admitted < calls) and self.limiter.try_acquire():
            admitted += 1
        self.now += latency
        for _ in range(admitted):
            self.limiter.release(started, self.now, outcome)
        return admitted

    def limits(self, rounds: int, latency: float, outcome: Outcome = Outcome.SUCCESS) -> list[int]:
        seen = []
        for _ in range(rounds):
            self.round(latency, outcome)
            seen.append(self.limiter.limit)
        return seen


def test_a_fixed_limiter_admits_up_to_its_limit_and_no_more() -> None:
    limiter = FixedLimiter(3)
    assert [limiter.try_acquire() for _ in range(5)] == [True, True, True, False, False]
    limiter.release(0.0, 1.0, Outcome.SUCCESS)
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    assert limiter.in_flight == 3
    with pytest.raises(ValueError, match="at least 1"):
        FixedLimiter(0)


def warmed_up(**settings: float) -> Driver:
    """An adaptive limiter past its first probe, which measured 10 ms of no-load latency."""
    driver = Driver(AdaptiveLimiter(AdaptiveSettings(**settings), max_limit=1000))  # type: ignore[arg-type]
    assert driver.limiter.limit == 4  # the probe runs at min_limit
    while driver.limiter.limit == 4:
        driver.round(10 * MS)
    assert driver.limiter.limit == 20
    return driver


def test_the_adaptive_limit_grows_while_latency_stays_flat() -> None:
    driver = warmed_up()
    limits = driver.limits(20, 10 * MS)
    assert limits == sorted(limits)
    assert limits[-1] > 60


def test_the_adaptive_limit_shrinks_when_latency_rises() -> None:
    driver = warmed_up()
    grown = driver.limits(20, 10 * MS)[-1]
    limits = driver.limits(20, 40 * MS)
    assert limits == sorted(limits, reverse=True)
    assert limits[-1] < grown / 2


def test_the_tolerance_sets_how_much_latency_may_rise_before_the_limit_shrinks() -> None:
    assert warmed_up(tolerance=1.5).limits(10, 22 * MS)[-1] < 20
    assert warmed_up(tolerance=2.0).limits(10, 22 * MS)[-1] > 20


def test_dropped_calls_shrink_the_limit_whatever_their_latency() -> None:
    driver = warmed_up()
    limits = driver.limits(100, 1 * MS, Outcome.DROPPED)
    assert limits == sorted(limits, reverse=True)
    assert limits[-1] < 10


def test_an_idle_server_keeps_its_limit() -> None:
    driver = warmed_up()
    for _ in range(50):
        driver.round(10 * MS, calls=3)  # far below the limit: nothing learnt about it
    assert driver.limiter.limit == 20


def test_ignored_calls_teach_nothing() -> None:
    driver = warmed_up()
    assert driver.limits(20, 500 * MS, Outcome.IGNORED) == [20] * 20


def test_the_no_load_latency_is_measured_again_so_a_slower_backend_is_not_starved() -> None:
    driver = warmed_up(probe_every=5)
    for _ in range(200):
        driver.round(30 * MS)  # three times slower for good: the limit first shrinks...
    before = driver.limiter.limit
    limits = driver.limits(100, 30 * MS)
    # ...then the probes re-measure 30 ms as the no-load latency and it grows back.
    assert max(limits) > before
    assert limits[-1] >= 20


def test_adaptive_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="min_limit"):
        AdaptiveSettings(min_limit=30)
    with pytest.raises(ValueError, match="tolerance"):
        AdaptiveSettings(tolerance=0.9)
    with pytest.raises(ValueError, match="initial_limit"):
        AdaptiveLimiter(AdaptiveSettings(), max_limit=10)
