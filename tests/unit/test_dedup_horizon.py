"""The dedup horizon: a rewind may go back as far as the processed-event records reach,
not a second further, and the refusal says what to do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.runtime.errors import InvalidArgument
from services.runtime.events.horizon import BeyondDedupHorizonError, check_rewind, dedup_horizon

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
WEEK = 7 * 86400.0


def test_the_horizon_is_the_retention_before_now() -> None:
    assert dedup_horizon(WEEK, NOW) == NOW - timedelta(days=7)


def test_a_rewind_up_to_the_horizon_is_allowed() -> None:
    check_rewind("audit", NOW - timedelta(days=7), WEEK, NOW)
    check_rewind("audit", NOW - timedelta(hours=1), WEEK, NOW)


def test_a_rewind_a_second_past_the_horizon_is_refused_with_what_to_do() -> None:
    with pytest.raises(BeyondDedupHorizonError) as refused:
        check_rewind("audit", NOW - timedelta(days=7, seconds=1), WEEK, NOW)
    message = str(refused.value)
    assert "group 'audit' remembers the events it processed for 168 h" in message
    assert "since 2026-11-25T12:00:00+00:00" in message
    assert "--allow-repeats" in message
    assert isinstance(refused.value, InvalidArgument), "a caller's mistake, not a bug"


def test_the_beginning_of_the_log_is_past_any_horizon() -> None:
    with pytest.raises(BeyondDedupHorizonError, match="re-reading from the beginning of the log"):
        check_rewind("feed", None, 3600.0, NOW)
