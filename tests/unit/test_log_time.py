"""A log line's time: RFC 3339 in UTC to the microsecond, as datetime would write it, for
any clock reading (the date and second are cached, so readings cross and revisit seconds)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from interceptors.server import log_time
from interceptors.server.log_time import utc_timestamp

FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def expected(ns: int) -> str:
    moment = datetime.fromtimestamp(ns // 1000 / 1_000_000, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def test_it_is_now() -> None:
    before = datetime.now(UTC)
    text = utc_timestamp()
    after = datetime.now(UTC)
    assert FORMAT.fullmatch(text), text
    assert before <= datetime.fromisoformat(text) <= after


@pytest.mark.parametrize(
    "readings",
    [
        # within one second, then the next, then back to an earlier one
        [1_764_362_354_000_000_000, 1_764_362_354_000_042_999, 1_764_362_354_999_999_000],
        [1_764_362_354_999_999_999, 1_764_362_355_000_000_000, 1_764_362_354_500_000_000],
        # midnight, a leap day, the epoch
        [1_767_225_599_999_999_000, 1_767_225_600_000_001_000, 1_709_164_800_123_456_000, 0],
    ],
)
def test_it_writes_each_reading_as_datetime_would(
    readings: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter(readings)
    monkeypatch.setattr(log_time, "_time_ns", lambda: next(clock))
    assert [utc_timestamp() for _ in readings] == [expected(ns) for ns in readings]
