"""Consumers: handlers subscribed to event types under a group name, each event's effect
applied exactly once although the transport delivers at least once.

Every transport may deliver an event again (a relay crash republishes, a consumer crash
re-reads from the last committed position, `rewind` and dead-letter replay re-read on
purpose), so a consumer records each event id *with* its effect, atomically, and treats an
id it already recorded as a duplicate (no effect; counted in `nova.events.duplicates`).
How, for effects in PostgreSQL (`Consumer.on`) and in Redis (`Consumer.on_redis`), is
effects.py's part.

A handler that raises is retried `max_attempts` times with a doubling backoff; then the
event goes to nova_events.dead_letters (dead_letters.py lists and replays them) and the
consumer moves on, so one poison event does not stop its group. A record that is not an
event at all (a Kafka tombstone, another producer's message, corrupt bytes in the log)
goes to the dead letters at once, with its raw bytes, position and why, and the consumer
moves past it the same way. Infrastructure errors
(the database or Redis unreachable) are not the event's fault: they abort the batch
without dead-lettering, and the consumer resubscribes after a backoff and re-reads from
its committed position (the events already done in that batch are then duplicates).

The transport position is committed only after the whole batch's effects committed.
Events of a type with no handler are skipped (and committed past).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import asyncpg
import structlog
from opentelemetry import metrics, propagate, trace
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from nova.events.v1 import events_pb2
from services.runtime.db import Database
from services.runtime.errors import ResourceExhausted
from services.runtime.events.dead_letters import record_dead_letter
from services.runtime.events.effects import (
    NotRetryable,
    PostgresHandler,
    RedisHandler,
    apply_in_redis,
    describe,
    mark_all_processed,
    mark_processed,
)
from services.runtime.events.model import Delivery, Event, Transport

_log = structlog.get_logger("nova.events.consumer")
_tracer = trace.get_tracer("nova.events")

ANY_EVENT = "*"
"""Registers a handler for every event type without a handler of its own."""

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    ResourceExhausted,
    RedisConnectionError,
    RedisTimeoutError,
)
"""Errors that say a dependency is down, not that the event is bad: never dead-lettered."""

_MAX_RETRY_BACKOFF_SECONDS = 2.0
_MAX_RESUBSCRIBE_BACKOFF_SECONDS = 5.0


@dataclass(frozen=True)
class ConsumerSettings:
    batch_size: int = 100
    """Deliveries fetched, processed and committed together."""
    fetch_timeout_seconds: float = 1.0
    """How long a fetch waits for the first delivery (and how late a stop can be seen)."""
    max_attempts: int = 5
    """Handler runs per event before it is dead-lettered."""
    retry_backoff_seconds: float = 0.05
    """Pause after the first failed attempt; doubles per attempt, capped at 2 s."""
    redis_marker_ttl_seconds: int = 7 * 86400
    """How long a Redis handler's processed marker is kept (its duplicate window)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_attempts < 1:
            raise ValueError("batch_size and max_attempts must be at least 1")


@dataclass(frozen=True)
class _Route:
    """One of the two: where the handler's effect goes."""

    postgres: PostgresHandler | None = None
    redis: RedisHandler | None = None


@dataclass(frozen=True, slots=True)
class _Pending:
    """A delivery of a batch's run, with its place in the batch and its handler."""

    index: int
    delivery: Delivery
    handler: PostgresHandler


class _RunFailed(Exception):
    """Rolls a run's transaction back: the handler at `position` raised `error`."""

    def __init__(self, position: int, error: Exception) -> None:
        super().__init__(position, error)
        self.position = position
        self.error = error


@dataclass
class ConsumerStats:
    """What a consumer did since it was made (the counters also go to the meter)."""

    processed: int = 0
    duplicates: int = 0
    skipped: int = 0
    """Events of a type without a handler."""
    retries: int = 0
    dead_lettered: int = 0
    batches: int = 0


@dataclass
class Consumer:
    """One consumer group's handlers, and the loop that feeds them from `transport`.

    ``consumer = Consumer("audit", transport, db); consumer.on(ANY_EVENT, record)``,
    then ``await consumer.run(stop)``. Several processes running the same group share the
    work as the transport assigns it.
    """

    group: str
    transport: Transport
    db: Database
    """Holds processed_events and dead_letters (and is where PostgreSQL effects go)."""
    topics: Sequence[str]
    """What it subscribes to: usually every topic of the registry (Registry.topics)."""
    redis: Redis | None = None
    """Needed by Redis handlers only; the caller owns (and closes) it."""
    settings: ConsumerSettings = field(default_factory=ConsumerSettings)
    meter: metrics.Meter | None = None
    stats: ConsumerStats = field(default_factory=ConsumerStats, init=False)
    _routes: dict[str, _Route] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        meter = self.meter if self.meter is not None else metrics.get_meter("nova.events")
        self._processed = meter.create_counter(
            "nova.events.processed",
            unit="{event}",
            description="Events whose handler's effect committed, by group and event type.",
        )
        self._duplicates = meter.create_counter(
            "nova.events.duplicates",
            unit="{event}",
            description="Deliveries of events a group had already processed (no effect).",
        )
        self._dead_lettered = meter.create_counter(
            "nova.events.dead_lettered",
            unit="{event}",
            description="Events whose handler failed every attempt, moved to dead_letters.",
        )

    def on(self, event_types: str | Iterable[str], handler: PostgresHandler) -> None:
        """Runs `handler` for these event types ("PostCreated", or ANY_EVENT), with its
        effect in PostgreSQL, in the transaction that records the event as processed."""
        for event_type in _names(event_types):
            self._add(event_type, _Route(postgres=handler))

    def on_redis(self, event_types: str | Iterable[str], handler: RedisHandler) -> None:
        """Runs `handler` for these event types with its effect in Redis, queued in the
        MULTI/EXEC transaction that sets the event's processed marker."""
        if self.redis is None:
            raise ValueError(f"consumer {self.group!r} has Redis handlers but no Redis client")
        for event_type in _names(event_types):
            self._add(event_type, _Route(redis=handler))

    def _add(self, event_type: str, route: _Route) -> None:
        if event_type in self._routes:
            raise ValueError(f"{self.group!r} already has a handler for {event_type!r}")
        self._routes[event_type] = route

    async def run(self, stop: asyncio.Event) -> None:
        """Consumes until `stop` is set (the batch in progress finishes and is committed)
        or the task is cancelled (the uncommitted batch is delivered again later)."""
        _log.info(
            "consumer started",
            group=self.group,
            topics=list(self.topics),
            transport=self.transport.name,
            event_types=sorted(self._routes),
        )
        backoff = 0.1
        try:
            while not stop.is_set():
                try:
                    async with self.transport.subscribe(self.group, self.topics) as subscription:
                        while not stop.is_set():
                            deliveries = await subscription.fetch(
                                self.settings.batch_size, self.settings.fetch_timeout_seconds
                            )
                            if deliveries:
                                await self.process(deliveries)
                                await subscription.commit(deliveries)
                            backoff = 0.1
                except Exception as error:  # a dependency or the transport failed
                    _log.warning(
                        "consumer batch failed; resubscribing",
                        group=self.group,
                        error=describe(error),
                        retry_in=backoff,
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff)
                    backoff = min(backoff * 2, _MAX_RESUBSCRIBE_BACKOFF_SECONDS)
        finally:
            _log.info("consumer stopped", group=self.group, **vars(self.stats))

    async def process(self, deliveries: Sequence[Delivery]) -> None:
        """Applies each delivery's effect once, in order; returns when all are done
        (processed, skipped as duplicates or without handler, or dead-lettered). Raises
        only for infrastructure errors, before the batch may be committed.

        PostgreSQL effects of consecutive deliveries share one transaction (one commit
        per batch instead of one per event: several times the throughput). The first
        whose handler fails ends that transaction with what came before it committed, and
        goes through the one-event path (retries, then the dead letters); the run
        continues after it, so order is kept."""
        index = 0
        while index < len(deliveries):
            index, failure = await self._apply_run(deliveries, index)
            if index < len(deliveries):
                await self._deliver(deliveries[index], failure)
                index += 1
        self.stats.batches += 1

    async def _apply_run(
        self, deliveries: Sequence[Delivery], start: int
    ) -> tuple[int, Exception | None]:
        """Applies deliveries[start:] in one transaction until one has a Redis handler or
        its handler fails; returns that one's index (len(deliveries) if none did) and the
        failure.

        The run's processed records go in one statement, then its handlers run, with no
        savepoint per event (for a handler of one statement, one round trip per event
        instead of four). A handler that fails rolls the whole transaction back; the
        events before it are then applied again, without it, so they commit as they
        would have in a savepoint each, and the failure counts as its first attempt."""
        end, run = self._run(deliveries, start)
        index, failure = end, None
        outcomes: list[bool] = []
        while run:
            result = await self._apply_together(run)
            if isinstance(result, list):
                outcomes = result
                break
            position, failure = result
            index = run[position].index
            run = run[:position]
        self.stats.skipped += index - start - len(outcomes)
        processed: Counter[str] = Counter()
        for pending, applied in zip(run, outcomes, strict=True):
            if applied:
                processed[pending.delivery.event.event_type] += 1
        for event_type, count in processed.items():
            self.stats.processed += count
            self._processed.add(count, {"group": self.group, "event_type": event_type})
        duplicates = len(outcomes) - processed.total()
        if duplicates:
            self.stats.duplicates += duplicates
            self._duplicates.add(duplicates, {"group": self.group})
        return index, failure

    def _run(self, deliveries: Sequence[Delivery], start: int) -> tuple[int, list[_Pending]]:
        """The deliveries from `start` that one transaction can apply (PostgreSQL
        handlers; those without a handler are passed over), up to the index of the first
        that it cannot (len(deliveries) if none)."""
        run: list[_Pending] = []
        for index in range(start, len(deliveries)):
            delivery = deliveries[index]
            if delivery.undecodable is not None:
                return index, run
            event = delivery.event
            route = self._routes.get(event.event_type) or self._routes.get(ANY_EVENT)
            if route is None:
                continue
            if route.postgres is None:
                return index, run
            run.append(_Pending(index, delivery, route.postgres))
        return len(deliveries), run

    async def _apply_together(self, run: Sequence[_Pending]) -> list[bool] | tuple[int, Exception]:
        """Per delivery of `run`, True if applied now, False for a duplicate (an id this
        group recorded before, or earlier in the run), all committed; or, when a handler
        failed and nothing committed, its position in `run` and how (a failure to record
        the ids counts as the first delivery's)."""
        outcomes: list[bool] = []
        try:
            async with self.db.transaction() as conn:
                try:
                    ids = [pending.delivery.event.event_id for pending in run]
                    fresh = await mark_all_processed(conn, self.group, ids)
                    for pending in run:
                        event = pending.delivery.event
                        applied = event.event_id in fresh
                        fresh.discard(event.event_id)
                        envelope = event.decode()
                        with self._span(pending.delivery, envelope):
                            if applied:
                                await pending.handler(conn, event, envelope)
                        outcomes.append(applied)
                except TRANSIENT_ERRORS:
                    raise
                except Exception as error:
                    raise _RunFailed(len(outcomes), error) from error
        except _RunFailed as failed:
            return failed.position, failed.error
        return outcomes

    def _span(
        self, delivery: Delivery, envelope: events_pb2.EventEnvelope
    ) -> contextlib.AbstractContextManager[trace.Span]:
        """The consumer span of one delivery, continuing the trace of the request that
        caused the event."""
        event = delivery.event
        return _tracer.start_as_current_span(
            f"process {event.event_type}",
            context=propagate.extract({"traceparent": envelope.traceparent}),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.consumer.group.name": self.group,
                "messaging.destination.name": delivery.topic,
                "messaging.message.id": str(event.event_id),
            },
        )

    async def _deliver(self, delivery: Delivery, first_failure: Exception | None = None) -> None:
        """One delivery with retries, then the dead letters; `first_failure` is how its
        first attempt (made in a batch's transaction) failed."""
        event = delivery.event
        if delivery.undecodable is not None:
            # No handler can run on it, and retrying cannot help: straight to the dead
            # letters (every group that reads it records its own), then move past it.
            await self._dead_letter(delivery, f"undecodable record: {delivery.undecodable}", 0)
            return
        route = self._routes.get(event.event_type) or self._routes.get(ANY_EVENT)
        if route is None:
            self.stats.skipped += 1
            return
        envelope = event.decode()
        with self._span(delivery, envelope):
            attempt = 0
            while True:
                attempt += 1
                try:
                    if first_failure is not None:
                        error, first_failure = first_failure, None
                        raise error
                    applied = await self._apply(route, event, envelope)
                    break
                except TRANSIENT_ERRORS:
                    raise
                except Exception as error:
                    if isinstance(error, NotRetryable) or attempt >= self.settings.max_attempts:
                        await self._dead_letter(delivery, error, attempt)
                        return
                    pause = min(
                        self.settings.retry_backoff_seconds * 2 ** (attempt - 1),
                        _MAX_RETRY_BACKOFF_SECONDS,
                    )
                    self.stats.retries += 1
                    _log.warning(
                        "event handler failed; retrying",
                        group=self.group,
                        event_id=str(event.event_id),
                        event_type=event.event_type,
                        attempt=attempt,
                        error=describe(error),
                        retry_in=pause,
                    )
                    await asyncio.sleep(pause)
        if applied:
            self.stats.processed += 1
            self._processed.add(1, {"group": self.group, "event_type": event.event_type})
        else:
            self.stats.duplicates += 1
            self._duplicates.add(1, {"group": self.group})

    async def _apply(self, route: _Route, event: Event, envelope: events_pb2.EventEnvelope) -> bool:
        """One attempt: True if the effect was applied now, False for a duplicate."""
        if route.postgres is not None:
            async with self.db.transaction() as conn:
                if not await mark_processed(conn, self.group, event.event_id):
                    return False
                await route.postgres(conn, event, envelope)
            return True
        handler = route.redis
        assert handler is not None
        assert self.redis is not None
        return await apply_in_redis(
            self.redis,
            f"nova:processed:{self.group}:{event.event_id}",
            self.settings.redis_marker_ttl_seconds,
            lambda pipe: handler(pipe, event, envelope),
        )

    async def _dead_letter(self, delivery: Delivery, error: Exception | str, attempts: int) -> None:
        event = delivery.event
        text = error if isinstance(error, str) else describe(error)
        async with self.db.connection() as conn:
            dead_letter_id = await record_dead_letter(
                conn, group=self.group, delivery=delivery, error=text, attempts=attempts
            )
        self.stats.dead_lettered += 1
        self._dead_lettered.add(1, {"group": self.group, "event_type": event.event_type})
        _log.error(
            "event dead-lettered",
            group=self.group,
            event_id=str(event.event_id),
            event_type=event.event_type,
            topic=delivery.topic,
            offset=delivery.offset,
            attempts=attempts,
            error=text,
            dead_letter_id=dead_letter_id,
        )


def _names(event_types: str | Iterable[str]) -> list[str]:
    return [event_types] if isinstance(event_types, str) else list(event_types)
