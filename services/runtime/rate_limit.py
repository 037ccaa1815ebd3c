"""Rate limits per key (a login, a client address): GCRA, in this process, in bounded memory.

GCRA (the generic cell rate algorithm) keeps one number per key, the time at which the
key's bucket would be empty again, and needs no timer: a call is allowed while that time
is at most `burst` intervals ahead of now. It is the token bucket without the refill loop.
A refused call changes nothing, so a caller that keeps knocking waits no longer for it.

Memory is bounded: past `max_keys` keys the least recently used one is forgotten (a key
whose time has passed holds nothing worth keeping). Forgetting a key still limited gives
it a fresh burst, so the bound should be well above the keys active within a burst's
length; it only ever gives way under a flood of distinct keys, which the per-address
limits bound in turn.

The state is this process's: each replica limits on its own, so N replicas allow N times
the rate. services/runtime/shared_rate_limit.py does the same arithmetic in one Redis
script, shared by every process, and counts with a `GcraTable` here while Redis is away;
it could take this one's place behind services.user.sign_in_limits.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """`per_minute` calls a minute on average, `burst` of them at once."""

    per_minute: int
    burst: int

    def __post_init__(self) -> None:
        if self.per_minute < 1 or self.burst < 1:
            raise ValueError(f"a rate needs per_minute >= 1 and burst >= 1: {self}")

    def __str__(self) -> str:
        return f"{self.per_minute}/min, bursts of {self.burst}"


_RESOLUTION = 1e-6
"""A wait under a microsecond is none: sums of a clock reading and intervals like 0.1 s
round in their last bits, which must not refuse the last call of a burst made in one
instant (the Redis script in shared_rate_limit.py rounds the same way)."""


class RateLimiter:
    """One limit over many keys: ``wait = limiter.try_acquire(key)``; 0.0 means allowed."""

    def __init__(
        self, rate: Rate, *, max_keys: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self._interval = 60.0 / rate.per_minute
        self._table = GcraTable(max_keys=max_keys, clock=clock)

    def __len__(self) -> int:
        return len(self._table)

    def try_acquire(self, key: str) -> float:
        """Counts a call of `key` if its limit allows it now and returns 0.0; otherwise
        counts nothing and returns the seconds until it would be allowed."""
        return self._table.try_acquire(key, self._interval, self.rate.burst)


class GcraTable:
    """GCRA over many keys with the rate given on each call, not fixed at construction:
    for limits that differ by key and may change between calls (a tenant's quota, read
    from its settings each time). A key's state does not depend on its rate, so a new
    rate takes effect on the next call; `RateLimiter` is this with one rate for all."""

    def __init__(self, *, max_keys: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys}")
        self._max_keys = max_keys
        self._clock = clock
        self._empty_at: OrderedDict[str, float] = OrderedDict()
        """By key: when its bucket is empty again; least recently allowed first."""

    def __len__(self) -> int:
        return len(self._empty_at)

    def try_acquire(self, key: str, interval: float, burst: int) -> float:
        """Counts a call of `key`, at one call per `interval` seconds and `burst` at once,
        if that allows it now and returns 0.0; otherwise counts nothing and returns the
        seconds until it would be allowed."""
        now = self._clock()
        empty_at = max(self._empty_at.get(key, now), now) + interval
        wait = empty_at - now - interval * burst
        if wait > _RESOLUTION:
            return wait
        self._empty_at[key] = empty_at
        self._empty_at.move_to_end(key)
        if len(self._empty_at) > self._max_keys:
            self._empty_at.popitem(last=False)
        return 0.0
