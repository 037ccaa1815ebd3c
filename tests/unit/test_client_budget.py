"""The retry budget: exact ratio, burst, and the per-second trickle."""

from __future__ import annotations

import pytest

from interceptors.client.retry import BudgetSettings, RetryBudget, RetrySettings


def spend(budget: RetryBudget) -> int:
    withdrawn = 0
    while budget.withdraw():
        withdrawn += 1
    return withdrawn


def test_a_new_budget_holds_its_burst_then_earns_ratio_per_call() -> None:
    budget = RetryBudget(BudgetSettings(ratio=0.1, min_per_second=0, burst=3))
    assert spend(budget) == 3
    for _ in range(9):
        budget.deposit()
    assert not budget.withdraw()
    budget.deposit()
    assert budget.withdraw()
    for _ in range(1000):
        budget.deposit()
    assert spend(budget) == 3


def test_retries_stay_within_the_ratio_of_calls() -> None:
    budget = RetryBudget(BudgetSettings(ratio=0.2, min_per_second=0, burst=1))
    spend(budget)
    retries = 0
    for _ in range(1000):
        budget.deposit()
        retries += budget.withdraw()
    assert retries == 200


def test_a_quiet_client_earns_min_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("interceptors.client.retry.time.monotonic", lambda: now[0])
    budget = RetryBudget(BudgetSettings(ratio=0, min_per_second=2, burst=10))
    assert spend(budget) == 10
    now[0] += 1.5
    assert spend(budget) == 3
    now[0] += 100
    assert spend(budget) == 10


@pytest.mark.parametrize(
    "make",
    [
        lambda: BudgetSettings(ratio=-0.1),
        lambda: BudgetSettings(burst=0.5),
        lambda: RetrySettings(max_attempts=0),
        lambda: RetrySettings(multiplier=0.5),
    ],
)
def test_settings_that_make_no_sense_are_refused(make: object) -> None:
    with pytest.raises(ValueError, match="need"):
        make()  # type: ignore[operator]
