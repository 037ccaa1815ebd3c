"""How many GraphQL requests one gateway process executes at once, and how long the rest
may wait for a turn: past both, a request is answered 503 at once instead of joining a
queue that only grows.

A gateway process is one event loop: requests beyond what its core can finish do not run
faster for being started, they interleave, and every one of them is late (and holds its
memory and its share of the services' pools meanwhile). So at most `max_in_flight`
execute; the next ones wait in arrival order, at most `queue_timeout_seconds` each and at
most `max_queued` of them, then are refused with `Retry-After`. Under a load above
capacity the requests admitted keep their normal latency and the rest learn at once that
they should back off; throughput stays at capacity.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class AdmissionSettings:
    max_in_flight: int = 16
    """Requests executing at once in one gateway process (a feed page is about 6 ms of
    its CPU, so 16 is already more than 90 ms of work queued inside the loop)."""
    max_queued: int = 64
    """Requests waiting for a turn; one more is refused at once."""
    queue_timeout_seconds: float = 0.05
    """The longest a request waits for a turn before it is refused."""

    def __post_init__(self) -> None:
        if self.max_in_flight < 1 or self.max_queued < 0 or self.queue_timeout_seconds < 0:
            raise ValueError(
                f"need max_in_flight >= 1, max_queued >= 0, queue_timeout >= 0: {self}"
            )


class Refused(Exception):
    """No turn came free in time: the gateway is at capacity."""

    def __init__(self, in_flight: int, queued: int) -> None:
        super().__init__(in_flight, queued)
        self.in_flight = in_flight
        self.queued = queued


class Admission:
    def __init__(self, settings: AdmissionSettings) -> None:
        self.settings = settings
        self.in_flight = 0
        self.refused = 0
        """Requests refused so far (what tests and the bench read)."""
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Runs the block in a turn: ``async with admission.turn(): ...``; raises Refused
        when none comes free within the queue timeout."""
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    async def _acquire(self) -> None:
        settings = self.settings
        if self.in_flight < settings.max_in_flight and not self._waiting:
            self.in_flight += 1
            return
        if len(self._waiting) >= settings.max_queued or settings.queue_timeout_seconds == 0:
            self._refuse()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), settings.queue_timeout_seconds)
        except TimeoutError:
            if waiter.done():  # handed a turn just as the wait ran out: take it
                return
            self._waiting.remove(waiter)
            waiter.cancel()
            self._refuse()
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # a turn handed to a caller who left: pass it on
            elif waiter in self._waiting:
                self._waiting.remove(waiter)
            raise

    def _release(self) -> None:
        """Hands the turn to the longest waiter, or frees it."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the turn passes on; in_flight stays
                return
        self.in_flight -= 1

    def _refuse(self) -> None:
        self.refused += 1
        raise Refused(self.in_flight, len(self._waiting))
