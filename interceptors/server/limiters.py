"""Concurrency limits: how many calls a server admits at once, fixed or found from latency.

A limiter counts calls in flight and answers at once whether one more may start; it never
queues. Both kinds are plain synchronous objects: on one event loop nothing can run between
the check and the increment, so the limit holds however calls arrive (grpc.aio's own
`maximum_concurrent_rpcs` queues instead of rejecting and has let waves of calls past it,
grpc/grpc #30424 and #41531). They read no clock: the caller passes each call's start and
end times in, which keeps the adaptive one deterministic under test.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Protocol


class Outcome(enum.Enum):
    """What a finished call says about the server's capacity."""

    SUCCESS = "success"
    """Served: its latency is a sample of how loaded the server is."""
    DROPPED = "dropped"
    """Ran out of time or of an inner resource (deadline, database pool): overloaded."""
    IGNORED = "ignored"
    """Says nothing about load (cancelled by the client, refused as a bad request)."""


_DROPPED, _IGNORED = Outcome.DROPPED, Outcome.IGNORED
"""Module constants: an enum member looked up on its class runs Python code."""


class Limiter(Protocol):
    @property
    def limit(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    def try_acquire(self) -> bool:
        """Counts one more call in flight, or returns False when the limit is reached."""

    def release(self, started: float, finished: float, outcome: Outcome) -> None:
        """Ends a call that try_acquire admitted; times in seconds on any one clock."""


class FixedLimiter:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a concurrency limit must be at least 1, got {limit}")
        self.limit = limit
        self.in_flight = 0

    def try_acquire(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def release(self, started: float, finished: float, outcome: Outcome) -> None:
        self.in_flight -= 1


@dataclass(frozen=True)
class AdaptiveSettings:
    initial_limit: int = 20
    min_limit: int = 4
    """Also the concurrency at which the no-load latency is measured."""
    tolerance: float = 1.5
    """Latency may reach this multiple of the no-load latency before the limit shrinks."""
    smoothing: float = 0.2
    """Weight of each new estimate; lower is steadier and slower."""
    window: int = 50
    """Calls per measurement window; the limit moves once per window."""
    probe_every: int = 100
    """Windows between two measurements of the no-load latency."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_limit <= self.initial_limit:
            raise ValueError(f"need 1 <= min_limit <= initial_limit: {self}")
        if self.tolerance < 1 or not 0 < self.smoothing <= 1:
            raise ValueError(f"need tolerance >= 1 and 0 < smoothing <= 1: {self}")
        if self.window < 1 or self.probe_every < 1:
            raise ValueError(f"window and probe_every must be at least 1: {self}")


class AdaptiveLimiter:
    """A gradient limit, as in Envoy's adaptive concurrency filter and Netflix's Gradient2.

    Once per window the limit is multiplied by tolerance x no-load latency / window mean
    latency (clamped to 0.5..2) and given sqrt(limit) of headroom to probe upwards: flat
    latency grows it, queueing (latency rising above the tolerance) shrinks it, and a window
    with a dropped call halves its estimate. The no-load latency comes from a window run at
    min_limit concurrency, at start and every probe_every windows, so a lasting queue never
    becomes the new normal; a lower window mean in between also lowers it. A window counts
    only calls that started in it: calls admitted under an older limit would show the
    latency of that limit, and the estimate would overshoot.
    """

    def __init__(self, settings: AdaptiveSettings, max_limit: int) -> None:
        if max_limit < settings.initial_limit:
            raise ValueError(f"max_limit {max_limit} is below initial_limit: {settings}")
        self._settings = settings
        self._max_limit = max_limit
        self._estimate = float(settings.initial_limit)
        self._baseline = 0.0
        """Mean latency of the last probe window (or a lower window mean since)."""
        self._windows_left = 0
        """Windows until the next probe; 0 while probing, as at start."""
        self._now = -math.inf
        """The latest end time seen: the limiter's only clock."""
        self.in_flight = 0
        self._window_start: float
        self._calls: int
        self._served: int
        self._latency_sum: float
        self._dropped: bool
        self._peak: int
        self._reset_window()

    @property
    def limit(self) -> int:
        return self._settings.min_limit if self._windows_left == 0 else int(self._estimate)

    def try_acquire(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        self._peak = max(self._peak, self.in_flight)
        return True

    def release(self, started: float, finished: float, outcome: Outcome) -> None:
        self.in_flight -= 1
        self._now = max(self._now, finished)
        if outcome is _IGNORED or started < self._window_start:
            return
        self._calls += 1
        if outcome is _DROPPED:
            self._dropped = True
        else:
            self._served += 1
            self._latency_sum += finished - started
        if self._calls >= self._settings.window:
            self._end_window()

    def _end_window(self) -> None:
        settings = self._settings
        mean = self._latency_sum / self._served if self._served else None
        if self._windows_left == 0:
            if mean is not None:
                self._baseline = mean
                self._windows_left = settings.probe_every
        else:
            self._windows_left -= 1
            if mean is not None:
                self._baseline = min(self._baseline, mean)
            if self._dropped or mean is None:
                gradient = 0.5
            else:
                gradient = min(2.0, max(0.5, settings.tolerance * self._baseline / mean))
            # Too few calls to fill the limit show nothing about it, unless they went wrong.
            if self._peak >= self._estimate / 2 or gradient < 1:
                target = self._estimate * gradient + math.sqrt(self._estimate)
                smoothed = (1 - settings.smoothing) * self._estimate + settings.smoothing * target
                self._estimate = min(self._max_limit, max(settings.min_limit, smoothed))
        self._reset_window()

    def _reset_window(self) -> None:
        self._window_start = self._now
        self._calls = 0
        self._served = 0
        self._latency_sum = 0.0
        self._dropped = False
        self._peak = self.in_flight
