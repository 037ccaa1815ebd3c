"""Merged reads: concurrent BatchGetPostMetrics calls of one tenant that arrive within a
short window become one ClickHouse query with `IN (…)`, split back per caller.

Every small query costs ClickHouse a fixed overhead (parsing, planning, a pass over the
index) that dwarfs reading a few rows; a feed page's gateway asks for 20 posts at a time,
so at load most of a query's cost is that overhead. The first call of a window starts
it; calls joining it add their ids (until `max_ids`, when the next call starts a new
window); when it closes one query answers all of them. A window closes once its time is
up *and* fewer than `max_in_flight` of its queries run: under load, calls gather while
ClickHouse is busy, so the busier it is the fewer queries it gets (a query of 20 ids
costs chdb about 3 ms of CPU, one of 200 about 4).

Each caller waits under its own deadline: a caller that gives up (its RPC cancelled)
stops waiting, and the shared query goes on for the others.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from opentelemetry import metrics

from services.analytics.repository import Metrics

Read = Callable[[uuid.UUID, Sequence[uuid.UUID]], Awaitable[dict[uuid.UUID, Metrics]]]


@dataclass
class _Window:
    ids: dict[uuid.UUID, None] = field(default_factory=dict)
    answer: asyncio.Future[dict[uuid.UUID, Metrics]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    callers: int = 0


@dataclass
class MergedReads:
    read: Read
    window_seconds: float
    """0: no merging, one query a call."""
    max_ids: int = 1000
    max_in_flight: int = 2
    meter: metrics.Meter | None = None
    _open: dict[uuid.UUID, _Window] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.max_in_flight)
        meter = self.meter if self.meter is not None else metrics.get_meter("nova.analytics")
        self._queries = meter.create_counter(
            "nova.analytics.metrics_queries",
            unit="{query}",
            description="ClickHouse queries made for BatchGetPostMetrics calls.",
        )
        self._callers = meter.create_histogram(
            "nova.analytics.merged_callers",
            unit="{call}",
            description="BatchGetPostMetrics calls answered by one ClickHouse query.",
        )

    async def get(
        self, tenant_id: uuid.UUID, post_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, Metrics]:
        """The metrics of `post_ids` that have any."""
        if self.window_seconds <= 0:
            self._queries.add(1)
            self._callers.record(1)
            return await self.read(tenant_id, post_ids)
        window = self._open.get(tenant_id)
        if window is None or len(window.ids) + len(post_ids) > self.max_ids:
            window = self._open[tenant_id] = _Window()
            task = asyncio.create_task(self._close_later(tenant_id, window))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        window.ids.update(dict.fromkeys(post_ids))
        window.callers += 1
        # shield: this caller's cancellation (its deadline) does not cancel the query the
        # others wait for.
        answer = await asyncio.shield(window.answer)
        return {post_id: answer[post_id] for post_id in post_ids if post_id in answer}

    async def _close_later(self, tenant_id: uuid.UUID, window: _Window) -> None:
        await asyncio.sleep(self.window_seconds)
        async with self._slots:  # still open meanwhile: callers keep joining
            if self._open.get(tenant_id) is window:
                del self._open[tenant_id]
            self._queries.add(1)
            self._callers.record(window.callers)
            try:
                window.answer.set_result(await self.read(tenant_id, list(window.ids)))
            except Exception as error:
                window.answer.set_exception(error)
                # Retrieved here too: every caller may have given up already.
                window.answer.exception()

    async def close(self) -> None:
        """Lets the open windows finish (their callers are answered)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
