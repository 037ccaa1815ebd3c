"""Single-flight: concurrent callers asking for the same key share one load.

A thousand readers of one missing home timeline must rebuild it once, and a cache miss
on a hot key must reach the database once. The load runs as a task of its own, so a
caller that is cancelled (its deadline passed, its client went away) stops waiting
without cancelling the load the others wait for, and without failing them (the bug class
of Go's singleflight, where the first caller's context governs everyone). A load that
fails fails every caller waiting on it, and the next call starts a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class SingleFlight(Generic[K, V]):
    """``value = await flights.run(key, lambda: load(key))``."""

    loads: int = 0
    """Loads started (what tests and benches count)."""
    _running: dict[K, asyncio.Task[V]] = field(default_factory=dict, init=False, repr=False)

    async def run(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(load())
            self.loads += 1
            self._running[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        # shield: cancelling this caller does not cancel the shared load.
        return await asyncio.shield(task)

    def in_flight(self, key: K) -> bool:
        return key in self._running

    def _forget(self, key: K, done: asyncio.Task[V]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled():
            done.exception()  # retrieved: a failure nobody awaited is not logged as lost
