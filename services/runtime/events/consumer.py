"""Consumers: handlers subscribed to event types under a group name, each event's effect
applied exactly once although the transport delivers at least once.

Every transport may deliver an event again (a relay crash republishes, a consumer crash
re-reads from the last committed position, `rewind` and dead-letter replay re-read on
purpose), so a consumer records each event id *with* its effect, atomically, and treats an
id it already recorded as a duplicate (no effect; counted in `nova.events.duplicates`).
How, for effects in PostgreSQL (`Consumer.on`) and in Redis (`Consumer.on_redis`), is
effects.py's part.

A handler that raises is retried `max_attempts` times with a doubling backoff; then the
event goes to nova_events.dead_letters (dead_letters.py lists them) and the consumer moves
on, so one poison event does not stop its group. Its aggregate is held back meanwhile: the
group parks that aggregate's later events, in order, rather than applying them before it
(parking.py). Between batches (at most every `maintenance_interval_seconds`) the consumer
applies the replays asked of its group (`nova events dlq replay`) and then the parked
events of aggregates no open letter holds back any more. A record that is not an
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
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial

import asyncpg
import structlog
from opentelemetry import metrics, propagate, trace
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from nova.events.v1 import events_pb2
from services.runtime.db import Database
from services.runtime.errors import ResourceExhausted
from services.runtime.events import parking
from services.runtime.events.dead_letters import (
    DeadLetter,
    mark_replayed,
    record_dead_letter,
    requested_replays,
)
from services.runtime.events.effects import (
    NotRetryable,
    PostgresHandler,
    RedisHandler,
    apply_in_redis,
    describe,
    mark_all_processed,
    mark_processed,
)
from services.runtime.events.model import Delivery, Event, Transport, UndecodableRecord

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
    maintenance_interval_seconds: float = 1.0
    """How often, at most, the consumer looks for replays asked of its group and for
    parked events it may release (how long `nova events dlq replay` waits, at least)."""

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
    parked: int = 0
    """Events held back behind a dead letter of their aggregate."""
    released: int = 0
    """Parked events applied (or found duplicates) once their aggregate was released."""
    replayed: int = 0
    """Dead letters applied again on request."""
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
    _next_maintenance: float = field(default=0.0, init=False, repr=False)

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
        self._parked = meter.create_counter(
            "nova.events.parked",
            unit="{event}",
            description="Events held back behind a dead letter of their aggregate.",
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
                            await self._maintain_when_due()
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
        continues after it, so order is kept. An event of an aggregate held back by a dead
        letter is parked instead."""
        async with self.db.connection() as conn:
            held = await parking.held(conn, self.group, deliveries)
        index = 0
        while index < len(deliveries):
            index, failure = await self._apply_run(deliveries, index, held)
            if index < len(deliveries):
                delivery = deliveries[index]
                if failure is None and _aggregate(delivery) in held:
                    await self._park(delivery)
                elif not await self._deliver(delivery, failure):
                    held.add(_aggregate(delivery))
                index += 1
        self.stats.batches += 1

    async def maintain(self) -> None:
        """Applies the replays asked of this group, then the parked events of aggregates
        that no open dead letter holds back (replayed, discarded, or drained by a release
        that was cut short). Raises only for infrastructure errors."""
        async with self.db.connection() as conn:
            letters = await requested_replays(conn, self.group, _MAINTENANCE_BATCH)
        for letter in letters:
            await self._replay(letter)
        while True:
            async with self.db.connection() as conn:
                aggregates = await parking.releasable(conn, self.group, _MAINTENANCE_BATCH)
            for aggregate in aggregates:
                await self._release(aggregate)
            if len(aggregates) < _MAINTENANCE_BATCH:
                return

    async def _maintain_when_due(self) -> None:
        now = asyncio.get_running_loop().time()
        if now >= self._next_maintenance:
            self._next_maintenance = now + self.settings.maintenance_interval_seconds
            await self.maintain()

    async def _replay(self, letter: DeadLetter) -> None:
        try:
            delivery = letter.delivery
        except UndecodableRecord:  # never asked for (request_replay refuses it)
            return
        _log.info(
            "replaying dead letter",
            group=self.group,
            dead_letter_id=letter.id,
            event_id=str(letter.event_id),
            event_type=letter.event_type,
        )
        if await self._deliver(delivery, also=partial(_mark_replayed, letter.id)):
            self.stats.replayed += 1

    async def _release(self, aggregate: parking.Aggregate) -> None:
        """Applies the aggregate's parked events in order until none is left or one is
        dead-lettered (which holds the aggregate again). Two members releasing the same
        aggregate keep the order too: each applies the first parked event before reading
        the next, and the processed-event record makes the second application a duplicate."""
        released = 0
        while True:
            async with self.db.connection() as conn:
                parked = await parking.next_parked(conn, self.group, aggregate)
            if parked is None:
                break
            unpark = partial(_unpark, parked.id)
            done = await self._deliver(parked.delivery, also=unpark, dead_lettered=unpark)
            released += 1
            self.stats.released += 1
            if not done:
                break
        if released:
            _log.info(
                "released parked events",
                group=self.group,
                topic=aggregate[0],
                aggregate_id=aggregate[1],
                events=released,
            )

    async def _park(self, delivery: Delivery) -> None:
        async with self.db.connection() as conn:
            await parking.park(conn, self.group, delivery)
        event = delivery.event
        self.stats.parked += 1
        self._parked.add(1, {"group": self.group})
        _log.warning(
            "event parked behind a dead letter of its aggregate",
            group=self.group,
            event_id=str(event.event_id),
            event_type=event.event_type,
            topic=delivery.topic,
            aggregate_id=event.aggregate_id,
            offset=delivery.offset,
        )

    async def _apply_run(
        self, deliveries: Sequence[Delivery], start: int, held: set[parking.Aggregate]
    ) -> tuple[int, Exception | None]:
        """Applies deliveries[start:] in one transaction until one has a Redis handler,
        is held back, or its handler fails; returns that one's index (len(deliveries) if
        none did) and the failure.

        The run's processed records go in one statement, then its handlers run, with no
        savepoint per event (for a handler of one statement, one round trip per event
        instead of four). A handler that fails rolls the whole transaction back; the
        events before it are then applied again, without it, so they commit as they
        would have in a savepoint each, and the failure counts as its first attempt."""
        end, run = self._run(deliveries, start, held)
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

    def _run(
        self, deliveries: Sequence[Delivery], start: int, held: set[parking.Aggregate]
    ) -> tuple[int, list[_Pending]]:
        """The deliveries from `start` that one transaction can apply (PostgreSQL
        handlers; those without a handler are passed over), up to the index of the first
        that it cannot (undecodable, held back, or with a Redis handler; len(deliveries)
        if none)."""
        run: list[_Pending] = []
        for index in range(start, len(deliveries)):
            delivery = deliveries[index]
            if delivery.undecodable is not None:
                return index, run
            if held and _aggregate(delivery) in held:
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

    async def _deliver(
        self,
        delivery: Delivery,
        first_failure: Exception | None = None,
        *,
        also: _Step | None = None,
        dead_lettered: _Step | None = None,
    ) -> bool:
        """One delivery with retries, then the dead letters; False if it was dead-lettered.
        `first_failure` is how its first attempt (made in a batch's transaction) failed;
        `also` runs in the transaction of the effect (after it for a Redis effect), and
        `dead_lettered` in that of the dead letter."""
        event = delivery.event
        if delivery.undecodable is not None:
            # No handler can run on it, and retrying cannot help: straight to the dead
            # letters (every group that reads it records its own), then move past it.
            reason = f"undecodable record: {delivery.undecodable}"
            await self._dead_letter(delivery, reason, 0, dead_lettered)
            return False
        route = self._routes.get(event.event_type) or self._routes.get(ANY_EVENT)
        if route is None:
            self.stats.skipped += 1
            if also is not None:
                async with self.db.transaction() as conn:
                    await also(conn)
            return True
        envelope = event.decode()
        with self._span(delivery, envelope):
            attempt = 0
            while True:
                attempt += 1
                try:
                    if first_failure is not None:
                        error, first_failure = first_failure, None
                        raise error
                    applied = await self._apply(route, event, envelope, also)
                    break
                except TRANSIENT_ERRORS:
                    raise
                except Exception as error:
                    if isinstance(error, NotRetryable) or attempt >= self.settings.max_attempts:
                        await self._dead_letter(delivery, error, attempt, dead_lettered)
                        return False
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
        return True

    async def _apply(
        self,
        route: _Route,
        event: Event,
        envelope: events_pb2.EventEnvelope,
        also: _Step | None = None,
    ) -> bool:
        """One attempt: True if the effect was applied now, False for a duplicate."""
        if route.postgres is not None:
            async with self.db.transaction() as conn:
                applied = await mark_processed(conn, self.group, event.event_id)
                if applied:
                    await route.postgres(conn, event, envelope)
                if also is not None:
                    await also(conn)
            return applied
        handler = route.redis
        assert handler is not None
        assert self.redis is not None
        applied = await apply_in_redis(
            self.redis,
            f"nova:processed:{self.group}:{event.event_id}",
            self.settings.redis_marker_ttl_seconds,
            lambda pipe: handler(pipe, event, envelope),
        )
        if also is not None:  # after the effect: if this is lost, the retry is a duplicate
            async with self.db.transaction() as conn:
                await also(conn)
        return applied

    async def _dead_letter(
        self,
        delivery: Delivery,
        error: Exception | str,
        attempts: int,
        also: _Step | None = None,
    ) -> None:
        event = delivery.event
        text = error if isinstance(error, str) else describe(error)
        async with self.db.transaction() as conn:
            dead_letter_id = await record_dead_letter(
                conn, group=self.group, delivery=delivery, error=text, attempts=attempts
            )
            if also is not None:
                await also(conn)
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


_Step = Callable[[asyncpg.Connection], Awaitable[None]]
"""A statement that commits together with an effect or a dead letter."""

_MAINTENANCE_BATCH = 100


def _aggregate(delivery: Delivery) -> parking.Aggregate:
    return parking.aggregate_of(delivery.event, delivery.topic)


async def _mark_replayed(dead_letter_id: int, conn: asyncpg.Connection) -> None:
    await mark_replayed(conn, dead_letter_id)


async def _unpark(parked_id: int, conn: asyncpg.Connection) -> None:
    await parking.unpark(conn, parked_id)
