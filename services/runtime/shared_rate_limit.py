"""Request quotas per key (a tenant), shared by every process through Redis: GCRA in one
Lua script, with this process's own GCRA standing in while Redis is unreachable.

Why one script: GCRA keeps one number per key, the "theoretical arrival time" (TAT, when
the key's bucket is empty again), and a call must read it, decide and write it back with
no other process in between. One script is atomic in Redis, takes one round trip, and
needs no lock, no retry loop (WATCH) and no timer.

Why Redis's clock (``TIME`` inside the script): the TAT is an absolute time, compared by
processes on different machines whose clocks disagree; one clock, Redis's, makes them
agree. Times in the script are microseconds; the wait comes back as a whole number of
microseconds, rounded up (a Lua number becomes a Redis integer by truncation).

The arithmetic, with interval = 1 / per_second and tolerance = interval * burst: a call is
allowed when ``max(tat, now) + interval - now <= tolerance``, and then stores that sum as the
new TAT; so an idle key takes `burst` calls at once, then one per interval. A refused call
writes nothing: a caller that keeps knocking waits no longer for it. The key expires when
its TAT passes (``SET … PX``), when it would mean the same as no key: no key lives forever,
and an idle tenant costs nothing. The quota comes with each call, so a tenant's new quota
counts from its next call, against the TAT the old one left.

When Redis is unreachable (or there is none), each process limits alone, in memory bounded
by `max_local_keys` (services/runtime/rate_limit.py's GcraTable): N processes then allow N
times the rate, and each starts its keys with a fresh burst; a quota enforced roughly is
better than every request refused or let through. One warning says so when it starts, one
line when Redis answers again. Meanwhile one call a second tries Redis again and the others
do not wait for a dead Redis. Only connection failures and timeouts fall back: any other
Redis error (a broken script, a wrong key type) is a bug, and raises.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.runtime.rate_limit import GcraTable

_log = logging.getLogger("nova.quota")

RETRY_SECONDS = 1.0
"""After a failure, how long calls count locally before one tries Redis again."""

_FAILURES = (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError)
"""What means "Redis is away" (a refused or dropped connection, no reply in time)."""

_GCRA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '') or now
if tat < now then tat = now end
local empty_at = tat + interval
local wait = empty_at - now - tolerance
if wait >= 1 then return math.ceil(wait) end
redis.call('SET', KEYS[1], string.format('%.17g', empty_at),
           'PX', string.format('%.0f', math.ceil((empty_at - now) / 1000)))
return 0
"""
"""KEYS[1]: the key's TAT; ARGV: interval (µs), burst. Returns the wait in µs, 0 if allowed.
A wait under 1 µs (the clock's resolution; sums of a ~1.7e15 µs clock and fractional
intervals round in their last bits) counts as none, so a burst from idle is never cut
short by rounding. '%.17g' stores the TAT exactly (Lua's own tostring keeps 14 digits)."""


@dataclass(frozen=True)
class Quota:
    """`per_second` calls a second on average (a fraction for slower ones: 0.5 is one
    every 2 s), `burst` of them at once after an idle spell."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.per_second) and self.per_second > 0):
            raise ValueError(
                f"a quota's per_second must be a finite number above 0, got {self.per_second!r}"
            )
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"a quota's burst must be a whole number >= 1, got {self.burst!r}")

    def __str__(self) -> str:
        return f"{self.per_second:g}/s, bursts of {self.burst}"


class SharedRateLimiter:
    """``wait = await limiter.try_acquire(str(tenant_id), quota)``; 0.0 means allowed,
    otherwise the seconds until a retry would be (the retry hint).

    `clock` is the local limiter's time and paces the retries of a dead Redis; Redis's own
    clock decides while it answers. `timeout_seconds` bounds each Redis call, whatever the
    client's own socket timeout (a paused Redis must not hold requests up)."""

    def __init__(
        self,
        redis: Redis | None,
        *,
        prefix: str = "nova:quota:",
        max_local_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        timeout_seconds: float = 1.0,
    ) -> None:
        if not timeout_seconds > 0:
            raise ValueError(f"timeout_seconds must be above 0, got {timeout_seconds!r}")
        self._script = redis.register_script(_GCRA) if redis is not None else None
        self._prefix = prefix
        self._local = GcraTable(max_keys=max_local_keys, clock=clock)
        self._clock = clock
        self._timeout = timeout_seconds
        self._retry_at: float | None = None
        """None while Redis answers; else when a call may try it again."""

    @property
    def local(self) -> bool:
        """Whether calls count in this process now (no Redis, or it has been failing)."""
        return self._script is None or self._retry_at is not None

    async def try_acquire(self, key: str, quota: Quota) -> float:
        """Counts a call of `key` if `quota` allows it now and returns 0.0; otherwise counts
        nothing and returns the seconds to wait. Never raises for Redis being away."""
        script = self._script
        if script is None:
            return self._local_acquire(key, quota)
        if self._retry_at is not None:
            now = self._clock()
            if now < self._retry_at:
                return self._local_acquire(key, quota)
            # This call tries Redis; the calls meanwhile stay local rather than pile on.
            self._retry_at = now + RETRY_SECONDS
        try:
            wait_us = await asyncio.wait_for(
                script(keys=[self._prefix + key], args=[repr(1e6 / quota.per_second), quota.burst]),
                self._timeout,
            )
        except _FAILURES as error:
            self._failed(error)
            return self._local_acquire(key, quota)
        if self._retry_at is not None:
            self._retry_at = None
            _log.info("redis answers again; quotas are shared again")
        return int(wait_us) / 1e6

    def _local_acquire(self, key: str, quota: Quota) -> float:
        return self._local.try_acquire(key, 1.0 / quota.per_second, quota.burst)

    def _failed(self, error: BaseException) -> None:
        if self._retry_at is None:  # one line an outage, not one a call
            _log.warning(
                "redis unreachable (%s: %s); quotas counted per process until it answers",
                type(error).__name__,
                error,
            )
        self._retry_at = self._clock() + RETRY_SECONDS
