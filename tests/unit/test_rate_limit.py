"""GCRA per key: a burst at once, then one call per interval; a refusal says how long to
wait and costs nothing; memory stays within max_keys. Time is a clock the test moves."""

import pytest

from services.runtime.rate_limit import Rate, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_allowed_at_once_and_the_next_call_waits_one_interval() -> None:
    clock = Clock()
    limiter = RateLimiter(Rate(per_minute=6, burst=3), max_keys=100, clock=clock)
    assert [limiter.try_acquire("grace") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.try_acquire("grace") == pytest.approx(10.0)
    assert limiter.try_acquire("ada") == 0.0, "each key has its own limit"
    clock.now += 9.9
    assert limiter.try_acquire("grace") == pytest.approx(0.1)
    clock.now += 0.1
    assert limiter.try_acquire("grace") == 0.0
    assert limiter.try_acquire("grace") == pytest.approx(10.0)


def test_refused_calls_do_not_push_the_wait_further() -> None:
    clock = Clock()
    limiter = RateLimiter(Rate(per_minute=60, burst=1), max_keys=100, clock=clock)
    assert limiter.try_acquire("k") == 0.0
    for _ in range(100):
        assert limiter.try_acquire("k") == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.try_acquire("k") == 0.0


def test_an_idle_key_earns_back_its_whole_burst_and_no_more() -> None:
    clock = Clock()
    limiter = RateLimiter(Rate(per_minute=60, burst=2), max_keys=100, clock=clock)
    assert limiter.try_acquire("k") == limiter.try_acquire("k") == 0.0
    clock.now += 3600
    assert limiter.try_acquire("k") == limiter.try_acquire("k") == 0.0
    assert limiter.try_acquire("k") > 0


def test_memory_is_bounded_by_forgetting_the_least_recently_allowed_key() -> None:
    clock = Clock()
    limiter = RateLimiter(Rate(per_minute=1, burst=1), max_keys=3, clock=clock)
    for key in ("a", "b", "c"):
        assert limiter.try_acquire(key) == 0.0
    assert limiter.try_acquire("a") > 0, "a refusal does not make a key recent"
    assert limiter.try_acquire("d") == 0.0
    assert len(limiter) == 3
    assert limiter.try_acquire("a") == 0.0, "a was forgotten, so it starts afresh"
    assert limiter.try_acquire("c") > 0, "c is still remembered"


@pytest.mark.parametrize(("per_minute", "burst"), [(0, 1), (1, 0)])
def test_a_rate_needs_at_least_one_call(per_minute: int, burst: int) -> None:
    with pytest.raises(ValueError, match="per_minute >= 1 and burst >= 1"):
        Rate(per_minute=per_minute, burst=burst)
