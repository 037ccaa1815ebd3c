"""The outbox relay: publishes what services wrote to their outboxes, then marks it sent.

Each pass over a schema is one transaction: claim the oldest unsent rows with
`FOR UPDATE SKIP LOCKED` (so several relays share the work and never publish the same row
in the normal path), publish them, mark them sent, commit. A crash between publish and
commit publishes those rows again on the next pass: delivery is at least once, and
consumers drop the duplicates by event id.

Per-aggregate order: a relay publishes an aggregate's claimed rows only up to the first
unsent row of that aggregate it does not hold; the rest wait for a later pass, once the
relay holding the earlier row has published it, so no relay ever overtakes another on one
aggregate (tests/integration/test_relay.py runs three against one outbox).

Writers notify `nova_outbox` when they commit events (outbox.append), so an idle relay
wakes at once; it also looks every `relay_poll_seconds` in case a notification was lost.
Sent rows are pruned after the retention period. The backlog (unsent rows and the age of
the oldest) is exported as metrics, read after a pass that emptied
the outbox and at most once a second while a backlog drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import structlog
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from services.runtime.db import Database
from services.runtime.events.model import Event, Publisher
from services.runtime.events.outbox import NOTIFY_CHANNEL, checked_schema
from services.runtime.events.settings import EventSettings

_log = structlog.get_logger("nova.relay")

_MAX_BACKOFF_SECONDS = 5.0
_PRUNE_EVERY_SECONDS = 60.0
_PRUNE_BATCH = 5000
_BACKLOG_EVERY_SECONDS = 1.0


@dataclass
class Backlog:
    """One schema's unsent rows, as last read."""

    unsent: int = 0
    oldest_unsent_age_seconds: float = 0.0


@dataclass
class RelayStats:
    published: int = 0
    passes: int = 0
    held_back: int = 0
    """Rows left for a later pass because another relay held an earlier row of their
    aggregate."""
    backlog: dict[str, Backlog] = field(default_factory=dict)


class Relay:
    """Relays the outboxes of `schemas` to `publisher` until stopped."""

    def __init__(
        self,
        db: Database,
        publisher: Publisher,
        schemas: Sequence[str],
        settings: EventSettings,
        *,
        meter: metrics.Meter | None = None,
    ) -> None:
        self._db = db
        self._publisher = publisher
        self._schemas = [checked_schema(schema) for schema in schemas]
        self._settings = settings
        self.stats = RelayStats(backlog={schema: Backlog() for schema in self._schemas})
        self._backlog_due: dict[str, float] = {}
        """When each schema's backlog is next read (monotonic seconds)."""
        meter = meter if meter is not None else metrics.get_meter("nova.events")
        self._published = meter.create_counter(
            "nova.events.relayed", unit="{event}", description="Outbox rows published."
        )
        meter.create_observable_gauge(
            "nova.events.outbox.unsent",
            callbacks=[self._observe_unsent],
            unit="{event}",
            description="Outbox rows not yet published, by schema.",
        )
        meter.create_observable_gauge(
            "nova.events.outbox.oldest_unsent_age",
            callbacks=[self._observe_age],
            unit="s",
            description="Age of the oldest unpublished outbox row, by schema (relay lag).",
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Relays until `stop` is set; a pass in progress finishes first."""
        wake = asyncio.Event()
        async with self._listening(wake):
            _log.info("relay started", schemas=self._schemas)
            backoff = 0.1
            next_prune = time.monotonic()
            while not stop.is_set():
                try:
                    wake.clear()
                    busy = False
                    for schema in self._schemas:
                        busy |= await self.relay_once(schema) >= self._settings.relay_batch_size
                    if time.monotonic() >= next_prune:
                        for schema in self._schemas:
                            await self.prune(schema)
                        next_prune = time.monotonic() + _PRUNE_EVERY_SECONDS
                    backoff = 0.1
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                    _log.warning("relay pass failed; retrying", error=str(error), retry_in=backoff)
                    await _wait(stop, backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
                    continue
                except Exception as error:  # the transport's own errors, whatever they are
                    _log.warning("publishing failed; retrying", error=repr(error), retry_in=backoff)
                    await _wait(stop, backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
                    continue
                if not busy:
                    await _wait_any(stop, wake, self._settings.relay_poll_seconds)
            _log.info("relay stopped", published=self.stats.published)

    async def relay_once(self, schema: str) -> int:
        """One pass over one schema's outbox: returns the rows claimed (published or held
        back), so the caller knows whether a full batch is waiting."""
        table = f"{checked_schema(schema)}.outbox"
        async with self._db.transaction() as conn:
            rows = await conn.fetch(
                f"""SELECT id, event_id, tenant_id, aggregate_type, aggregate_id, event_type,
                           occurred_at, envelope
                      FROM {table}
                     WHERE sent_at IS NULL
                     ORDER BY id
                     LIMIT $1
                       FOR UPDATE SKIP LOCKED""",
                self._settings.relay_batch_size,
            )
            if rows:
                in_order = await self._in_order(conn, table, rows)
                ready = [row for row in rows if row["id"] in in_order]
                if ready:
                    await self._publisher.publish([_event(row) for row in ready])
                    await conn.execute(
                        f"UPDATE {table} SET sent_at = now() WHERE id = ANY($1::bigint[])",
                        [row["id"] for row in ready],
                    )
                self.stats.published += len(ready)
                self.stats.held_back += len(rows) - len(ready)
                self._published.add(len(ready), {"schema": schema})
            # Counting the unsent rows reads all of them: while a backlog drains in full
            # batches, at most once a second; after a short batch the rest is small.
            now = time.monotonic()
            if len(rows) < self._settings.relay_batch_size or now >= self._backlog_due.get(
                schema, 0.0
            ):
                self._backlog_due[schema] = now + _BACKLOG_EVERY_SECONDS
                # After the UPDATE, in the same transaction: what this pass sent is not counted.
                self.stats.backlog[schema] = await _backlog(conn, table)
        self.stats.passes += 1
        return len(rows)

    @staticmethod
    async def _in_order(
        conn: asyncpg.Connection, table: str, rows: Sequence[asyncpg.Record]
    ) -> set[int]:
        """The ids of `rows` that can be published now without overtaking: for each
        aggregate, its claimed rows up to the first unsent row of it that this pass does
        not hold (held by another relay, which must publish it first)."""
        claimed = {row["id"] for row in rows}
        last: dict[str, int] = {}
        for row in rows:
            last[row["aggregate_id"]] = row["id"]
        unsent = await conn.fetch(
            f"""SELECT o.aggregate_id, o.id
                  FROM unnest($1::text[], $2::bigint[]) AS c(aggregate_id, last_id)
                  JOIN {table} o
                    ON o.aggregate_id = c.aggregate_id AND o.id <= c.last_id
                   AND o.sent_at IS NULL
                 ORDER BY o.id""",
            list(last),
            list(last.values()),
        )
        ready: set[int] = set()
        blocked: set[str] = set()
        for row in unsent:
            if row["aggregate_id"] in blocked:
                continue
            if row["id"] in claimed:
                ready.add(row["id"])
            else:
                blocked.add(row["aggregate_id"])
        return ready

    async def prune(self, schema: str) -> int:
        """Deletes sent rows older than the retention period, a batch at a time."""
        table = f"{checked_schema(schema)}.outbox"
        deleted = 0
        while True:
            async with self._db.connection() as conn:
                status = await conn.execute(
                    f"""DELETE FROM {table}
                         WHERE id IN (SELECT id FROM {table}
                                       WHERE sent_at < now() - make_interval(secs => $1)
                                       LIMIT $2)""",
                    self._settings.outbox_retention_seconds,
                    _PRUNE_BATCH,
                )
            count = int(status.split()[-1])
            deleted += count
            if count < _PRUNE_BATCH:
                return deleted

    @contextlib.asynccontextmanager
    async def _listening(self, wake: asyncio.Event) -> AsyncIterator[None]:
        def notified(*_: object) -> None:
            wake.set()

        async with self._db.connection() as conn:
            await conn.add_listener(NOTIFY_CHANNEL, notified)
            try:
                yield
            finally:
                await conn.remove_listener(NOTIFY_CHANNEL, notified)

    def _observe_unsent(self, options: CallbackOptions) -> Iterable[Observation]:
        for schema, backlog in list(self.stats.backlog.items()):
            yield Observation(backlog.unsent, {"schema": schema})

    def _observe_age(self, options: CallbackOptions) -> Iterable[Observation]:
        for schema, backlog in list(self.stats.backlog.items()):
            yield Observation(backlog.oldest_unsent_age_seconds, {"schema": schema})


async def _backlog(conn: asyncpg.Connection, table: str) -> Backlog:
    row = await conn.fetchrow(
        f"SELECT count(*) AS unsent, min(occurred_at) AS oldest FROM {table} WHERE sent_at IS NULL"
    )
    assert row is not None
    oldest = row["oldest"]
    return Backlog(
        unsent=row["unsent"],
        oldest_unsent_age_seconds=(
            (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
        ),
    )


def _event(row: asyncpg.Record) -> Event:
    return Event(
        event_id=row["event_id"],
        event_type=row["event_type"],
        aggregate_type=row["aggregate_type"],
        aggregate_id=row["aggregate_id"],
        tenant_id=row["tenant_id"],
        occurred_at=row["occurred_at"],
        envelope=bytes(row["envelope"]),
    )


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    """Until stop or wake is set, or `seconds` pass."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
