"""The per-address rate of persisted-query registrations: a burst, then the rate, each
address on its own, in bounded memory."""

import pytest

from gateway.registration_rate import RegistrationRate

SECOND = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 5 * SECOND

    def __call__(self) -> int:
        return self.now


def test_a_burst_is_allowed_then_the_rate() -> None:
    clock = Clock()
    rate = RegistrationRate(10, 50, clock=clock)
    assert [rate.allow("198.51.100.1") for _ in range(51)] == [True] * 50 + [False]
    clock.now += SECOND // 10
    assert [rate.allow("198.51.100.1") for _ in range(2)] == [True, False]
    clock.now += SECOND
    assert sum(rate.allow("198.51.100.1") for _ in range(20)) == 10


def test_each_address_has_its_own_bucket() -> None:
    rate = RegistrationRate(1, 2, clock=Clock())
    assert [rate.allow("198.51.100.1") for _ in range(3)] == [True, True, False]
    assert [rate.allow("198.51.100.2") for _ in range(3)] == [True, True, False]
    assert [rate.allow(None) for _ in range(3)] == [True, True, False]


def test_refused_attempts_do_not_push_the_next_one_back() -> None:
    clock = Clock()
    rate = RegistrationRate(1, 1, clock=clock)
    assert rate.allow("a")
    for _ in range(1000):
        assert not rate.allow("a")
    clock.now += SECOND
    assert rate.allow("a")


def test_memory_is_bounded_by_forgetting_the_least_recent_address() -> None:
    rate = RegistrationRate(1, 1, max_clients=3, clock=Clock())
    for address in ("a", "b", "c", "d"):
        assert rate.allow(address)
    assert len(rate) == 3
    assert not rate.allow("d")
    assert rate.allow("a"), "forgotten, so it starts again with its burst"


def test_a_rate_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RegistrationRate(0, 50)
