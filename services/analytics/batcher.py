"""The insert batcher: many small stagings become few large ClickHouse inserts.

ClickHouse wants at least about 1,000 rows an insert and about one insert a second a table
(each insert is a part on disk; past 3,000 active parts a table refuses inserts). Rows are
staged in the PostgreSQL journal (journal.py) by whoever accepted them, and a flusher per
target writes a batch when `flush_rows` rows or `flush_bytes` bytes wait, or the oldest
has waited `flush_interval`, whichever comes first; at close it writes everything left.

Exactly once: a batch is claimed (committed) before its insert and deleted after, and the
insert carries `<journal>-<table>-<batch>` as its insert_deduplication_token. A flusher
that dies after the insert leaves the batch claimed; whoever finds it (this process at
its next start, or any flusher once it is `stale_after` old) inserts it again, and
ClickHouse recognises the token (within the tables' deduplication window of 1,000
inserts) and writes nothing, nor do the materialized views.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field

import structlog
from opentelemetry import metrics

from services.analytics import journal
from services.analytics.rows import TARGETS, Target
from services.runtime.analytics_settings import AnalyticsSettings
from services.runtime.clickhouse import ClickHouse
from services.runtime.db import Database
from services.runtime.events.effects import describe

_log = structlog.get_logger("nova.analytics.batcher")

_TICKS_PER_INTERVAL = 4
"""A flusher looks whether a batch is due this often per flush interval (a full batch of
this process's wakes it at once)."""
_PARTS_EVERY_SECONDS = 5.0


@dataclass
class TargetStats:
    """What one target's flusher did (also counted in the meter)."""

    inserts: int = 0
    rows: int = 0
    """Rows sent (a batch ClickHouse recognised as inserted before counts again)."""
    failures: int = 0


@dataclass
class Batcher:
    db: Database
    clickhouse: ClickHouse
    settings: AnalyticsSettings = field(default_factory=AnalyticsSettings)
    meter: metrics.Meter | None = None
    stats: dict[str, TargetStats] = field(
        default_factory=lambda: {name: TargetStats() for name in TARGETS}
    )
    active_parts: dict[str, int] = field(default_factory=dict)
    """Active parts per table, as of the last look (every few seconds)."""
    _backlog: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TARGETS, 0))
    _wake: dict[str, asyncio.Event] = field(default_factory=dict)
    _unwritten: dict[str, list[int]] = field(default_factory=lambda: {t: [] for t in TARGETS})
    _task: asyncio.Task[None] = field(init=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _journal: uuid.UUID | None = None

    def __post_init__(self) -> None:
        meter = self.meter if self.meter is not None else metrics.get_meter("nova.analytics")
        self._inserts = meter.create_counter(
            "nova.analytics.inserts", unit="{insert}", description="ClickHouse inserts, by table."
        )
        self._rows = meter.create_counter(
            "nova.analytics.inserted_rows", unit="{row}", description="Rows inserted, by table."
        )
        self._insert_time = meter.create_histogram(
            "nova.analytics.insert.duration", unit="s", description="One batch's insert."
        )

    def start(self) -> None:
        """Starts the flushers (in the background: this is called as the server is built)."""
        self._wake = {name: asyncio.Event() for name in TARGETS}
        self._task = asyncio.create_task(self._main(), name="analytics-batcher")

    async def _main(self) -> None:
        backoff = 0.1
        while not await self._started():
            if self._stop.is_set():
                return  # never reached PostgreSQL: what waits stays for the next start
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, 5.0)
        await asyncio.gather(
            *(self._run(target) for target in TARGETS.values()), self._watch_parts()
        )

    async def _started(self) -> bool:
        """Reads the journal's id and what a previous run (or a dead process) claimed;
        False while PostgreSQL cannot be reached (the service serves meanwhile)."""
        try:
            self._journal = await journal.journal_id(self.db)
            for name in TARGETS:
                self._unwritten[name] = await journal.left_behind(
                    self.db, name, older_than_seconds=0
                )
                await self._refresh_backlog(name)
        except Exception as error:
            _log.warning("analytics batcher cannot start yet; retrying", error=describe(error))
            return False
        return True

    def backlog_rows(self, target: str) -> int:
        """Rows waiting for `target`, as of the flusher's last look plus what this process
        staged since: what RecordImpressions admits against."""
        return self._backlog[target]

    def staged(self, target: str, rows: int) -> None:
        """Tells the flusher rows were staged (and wakes it once a batch is full)."""
        self._backlog[target] += rows
        if self._backlog[target] >= self.settings.flush_rows:
            self._wake[target].set()

    async def close(self) -> None:
        """Stops the flushers after each writes what waits (bounded by the caller's grace:
        cancelled, what is left stays in the journal for the next start)."""
        self._stop.set()
        for event in self._wake.values():
            event.set()
        try:
            await self._task
        finally:
            self._task.cancel()

    async def flush(self, target: str) -> None:
        """Writes every batch that waits for `target` now, due or not."""
        await self._write_unwritten(TARGETS[target])
        while await self._claim_and_write(TARGETS[target]):
            pass
        await self._refresh_backlog(target)

    async def _run(self, target: Target) -> None:
        tick = self.settings.flush_interval_seconds / _TICKS_PER_INTERVAL
        backoff = tick
        next_stale_look = 0.0
        while True:
            closing = self._stop.is_set()
            try:
                if closing:
                    await self.flush(target.table)
                    return
                await self._write_unwritten(target)
                now = time.monotonic()
                if now >= next_stale_look:
                    next_stale_look = now + self.settings.stale_after_seconds / 2
                    await self._write_stale(target)
                while await self._due(target):
                    if not await self._claim_and_write(target):
                        break
                backoff = tick
            except Exception as error:  # PostgreSQL or ClickHouse down: keep trying
                self.stats[target.table].failures += 1
                _log.warning(
                    "analytics flush failed; retrying",
                    table=target.table,
                    error=describe(error),
                    retry_in=backoff,
                )
                if closing:
                    return
                backoff = min(backoff * 2, 5.0)
            wake = self._wake[target.table]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), backoff)
            wake.clear()

    async def _due(self, target: Target) -> bool:
        waiting = await journal.waiting(self.db, target.table)
        self._backlog[target.table] = waiting.rows + waiting.claimed_rows
        if waiting.entries == 0:
            return False
        settings = self.settings
        if waiting.rows >= settings.flush_rows or waiting.bytes >= settings.flush_bytes:
            return True
        assert waiting.oldest is not None
        age = time.time() - waiting.oldest.timestamp()
        return age >= settings.flush_interval_seconds

    async def _refresh_backlog(self, name: str) -> None:
        waiting = await journal.waiting(self.db, name)
        self._backlog[name] = waiting.rows + waiting.claimed_rows

    async def _claim_and_write(self, target: Target) -> bool:
        batch_id = await journal.claim(
            self.db,
            target.table,
            max_rows=self.settings.flush_rows,
            max_bytes=self.settings.flush_bytes,
        )
        if batch_id is None:
            return False
        self._unwritten[target.table].append(batch_id)
        await self._write_unwritten(target)
        return True

    async def _write_stale(self, target: Target) -> None:
        stale = await journal.left_behind(
            self.db, target.table, older_than_seconds=self.settings.stale_after_seconds
        )
        unwritten = self._unwritten[target.table]
        unwritten.extend(batch for batch in stale if batch not in unwritten)
        await self._write_unwritten(target)

    async def _write_unwritten(self, target: Target) -> None:
        unwritten = self._unwritten[target.table]
        while unwritten:
            await self._write(target, unwritten[0])
            unwritten.pop(0)

    async def _write(self, target: Target, batch_id: int) -> None:
        batch = await journal.read_batch(self.db, target.table, batch_id)
        if batch is None:
            return  # another flusher wrote and deleted it
        token = f"{self._journal}-{target.table}-{batch_id}"
        started = time.perf_counter()
        await self.clickhouse.insert(
            f"{self.clickhouse.database}.{target.table}",
            target.columns,
            batch.payload,
            {
                "insert_deduplicate": 1,
                "insert_deduplication_token": token,
                "deduplicate_blocks_in_dependent_materialized_views": 1,
            },
        )
        self._insert_time.record(time.perf_counter() - started, {"table": target.table})
        await journal.forget(self.db, batch_id)
        stats = self.stats[target.table]
        stats.inserts += 1
        stats.rows += batch.rows
        self._inserts.add(1, {"table": target.table})
        self._rows.add(batch.rows, {"table": target.table})

    async def _watch_parts(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                rows = await self.clickhouse.query(
                    "SELECT table, toInt64(count()) FROM system.parts "
                    "WHERE active AND database = {database:String} GROUP BY table",
                    {"database": self.clickhouse.database},
                )
                self.active_parts = {str(table): int(count) for table, count in rows}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), _PARTS_EVERY_SECONDS)
