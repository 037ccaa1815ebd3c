"""How fast one client address may register automatic persisted queries: GCRA per
address, in this process, in bounded memory.

Registering is the one request that makes the gateway keep something a client chose,
so one client must not churn the shared LRU: past its rate, a query still runs (the
document cache still serves it) but is not registered, and the client's next hash-only
request answers PersistedQueryNotFound, which Apollo clients answer by sending the text
again. No client sees an error, and a well-behaved one registers each query once.

GCRA (the generic cell rate algorithm) keeps one number per address, the time at which
its bucket is empty again: an attempt is allowed while that time is at most `burst`
intervals ahead of now. A refused attempt changes nothing. Past MAX_CLIENTS addresses
the least recently allowed is forgotten, which gives it a fresh burst: the bound only
gives way under a flood of distinct addresses, and each of those still gets no more
than its burst. (services/runtime/rate_limit.py is the same algorithm for the services;
the gateway may not import it.)
"""

import time
from collections import OrderedDict
from collections.abc import Callable

MAX_CLIENTS = 10_000
"""Addresses remembered: about 150 bytes each, so 1.5 MB at most."""


class RegistrationRate:
    """``if rate.allow(address): persisted.register(...)``"""

    def __init__(
        self,
        per_second: int,
        burst: int,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if per_second < 1 or burst < 1 or max_clients < 1:
            raise ValueError(
                f"per_second, burst and max_clients must be at least 1: "
                f"{per_second}, {burst}, {max_clients}"
            )
        # Whole nanoseconds: float sums of 0.1 s would make the 50th of a burst of 50 late.
        self._interval = 1_000_000_000 // per_second
        self._tolerance = self._interval * burst
        self._max_clients = max_clients
        self._clock = clock
        self._empty_at: OrderedDict[str, int] = OrderedDict()
        """By address: when its bucket is empty again (the clock's nanoseconds); least
        recently allowed first."""

    def __len__(self) -> int:
        return len(self._empty_at)

    def allow(self, address: str | None) -> bool:
        """Counts a registration of `address` (None: a client the server did not name,
        all such sharing one bucket) and returns True if its rate allows one now."""
        key = address or ""
        now = self._clock()
        empty_at = max(self._empty_at.get(key, now), now) + self._interval
        if empty_at - now > self._tolerance:
            return False
        self._empty_at[key] = empty_at
        self._empty_at.move_to_end(key)
        if len(self._empty_at) > self._max_clients:
            self._empty_at.popitem(last=False)
        return True
