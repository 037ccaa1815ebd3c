"""`./dev bench events`: events from commit to consumer effect, on both transports.

For each transport (the PostgreSQL log, then Kafka: NOVA_KAFKA_BOOTSTRAP's, or the
embedded Tansu broker when none is set) the real path runs in this process: writers
commit PostLiked events to an outbox of the bench's own (one event per transaction, as a
service writes them), the relay publishes them, and a consumer group applies each with
an effect row in the same transaction as its processed-event record. Two measurements:

- throughput: `--events` events committed by 8 concurrent writers with the relay
  stopped (writes/s), then the relay started: events/s until the last effect (the rate
  the path drains a backlog at, which writers alone cannot reach here). The consumer
  runs from the start, and one event has gone through the path before, so neither the
  group's join nor the topic's creation is counted;
- lag: events written at a fixed `--rate` for `--duration` seconds (open loop); per event,
  the time from its commit to its effect (the effect row's clock_timestamp()), p50/p99.

Writers, relay and consumer share this process and PostgreSQL shares the machine, as in
`nova up`; a deployment runs them apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg
import click
from hdrh.histogram import HdrHistogram
from rich.table import Table

from nova.events.v1 import events_pb2
from services.cli.common import load_config
from services.runtime.config import Config
from services.runtime.db import Database
from services.runtime.events import outbox
from services.runtime.events.consumer import ANY_EVENT, Consumer, ConsumerSettings
from services.runtime.events.envelope import new_event
from services.runtime.events.model import Event, Transport, topic_for
from services.runtime.events.relay import Relay
from services.runtime.events.settings import EventSettings
from services.runtime.events.transports import open_transport
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.process import migrate_services, open_dependencies
from tests.bench.harness import BenchError, console, run
from tests.brokers import BrokerStartError, single_node_settings, tansu_broker

_SCHEMA = "bench_events"
_WRITERS = 8
_HIGHEST_MICROSECONDS = 600_000_000
_SETTLE_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class EventsBench:
    events: int
    """Events of the throughput run."""
    rate: float
    """Events/s of the lag run."""
    duration: float
    """Seconds of the lag run."""


@dataclass(frozen=True)
class Measured:
    transport: str
    writes_per_second: float
    """Events committed to the outbox per second by the writers (relay not running)."""
    events_per_second: float
    """Events relayed, transported and applied per second, draining that backlog."""
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    lag_events: int
    duplicates: int


async def bench_events(config: Config, options: EventsBench) -> list[Measured]:
    out = console()
    results = []
    async with open_dependencies(config) as deps:
        # The event machinery's tables; the bench writes to an outbox of its own.
        await migrate_services(deps.db, [])
        await _bench_schema(deps.db)
        for name in ("postgres", "kafka"):
            out.print(f"bench: {name} transport")
            async with _transport_settings(config.events, name) as settings:
                results.append(await _measure(deps.db, settings, options))
    out.print(table(results, options))
    return results


@contextlib.asynccontextmanager
async def _transport_settings(
    configured: EventSettings, transport: str
) -> AsyncIterator[EventSettings]:
    """The configured event settings on the PostgreSQL log, or on Kafka: the configured
    one, or else an embedded Tansu broker while the block runs."""
    if transport == "postgres":
        yield replace(configured, kafka_bootstrap=None)
    elif configured.kafka_bootstrap is not None:
        yield configured
    else:
        try:
            async with tansu_broker() as bootstrap:
                yield single_node_settings(configured, bootstrap)
        except BrokerStartError as error:
            raise BenchError(str(error)) from None


async def _bench_schema(db: Database) -> None:
    async with db.connection() as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {_SCHEMA} CASCADE")
        await conn.execute(f"CREATE SCHEMA {_SCHEMA}")
        await outbox.migrate_outbox(conn, _SCHEMA)
        await conn.execute(
            f"""CREATE TABLE {_SCHEMA}.effects (
                    event_id uuid PRIMARY KEY,
                    committed_at timestamptz NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT clock_timestamp())"""
        )


async def _measure(db: Database, settings: EventSettings, options: EventsBench) -> Measured:
    async with (
        open_transport(db, settings) as transport,
        transport.publisher() as publisher,
    ):
        group = f"bench-{uuid.uuid4().hex[:8]}"
        await transport.rewind(group, [topic_for("post")], datetime.now().astimezone())
        consumer = _consumer(transport, db, group)
        relay = Relay(db, publisher, [_SCHEMA], settings)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(consumer.run(stop))]
        try:
            await _warm_up(db, relay, consumer)
            started = time.perf_counter()
            backlog = await _write_many(db, options.events)
            written = time.perf_counter() - started
            before = consumer.stats.processed
            started = time.perf_counter()
            tasks.append(asyncio.create_task(relay.run(stop)))
            await _applied(db, consumer, backlog, before)
            drained = time.perf_counter() - started
            lag = await _lag(db, consumer, options.rate, options.duration)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    return Measured(
        transport=transport.name,
        writes_per_second=options.events / written,
        events_per_second=options.events / drained,
        lag_p50_ms=lag.get_value_at_percentile(50) / 1000,
        lag_p99_ms=lag.get_value_at_percentile(99) / 1000,
        lag_max_ms=lag.get_max_value() / 1000,
        lag_events=lag.get_total_count(),
        duplicates=consumer.stats.duplicates,
    )


async def _warm_up(db: Database, relay: Relay, consumer: Consumer) -> None:
    """One event through the whole path before anything is measured, so the drain starts
    with the consumer in its group and the topic there: joining a group on Kafka takes
    seconds (about half the session timeout on Tansu), which the drain of the backlog
    used to include."""
    before = consumer.stats.processed
    stop = asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop))
    try:
        await _applied(db, consumer, await _write_many(db, 1), before)
    finally:
        stop.set()
        await relaying


def _consumer(transport: Transport, db: Database, group: str) -> Consumer:
    async def apply(conn: asyncpg.Connection, event: Event, envelope: object) -> None:
        await conn.execute(
            f"""INSERT INTO {_SCHEMA}.effects (event_id, committed_at) VALUES ($1, $2)""",
            event.event_id,
            event.occurred_at,
        )

    consumer = Consumer(
        group,
        transport,
        db,
        topics=[topic_for("post")],
        settings=ConsumerSettings(batch_size=500, fetch_timeout_seconds=0.2),
    )
    consumer.on(ANY_EVENT, apply)
    return consumer


async def _write(db: Database, post_id: str) -> uuid.UUID:
    """One transaction with one event; occurred_at is set just before the commit."""
    event = new_event(
        tenant_id=DEFAULT_TENANT_ID,
        aggregate_type="post",
        aggregate_id=post_id,
        payload=events_pb2.PostLiked(post_id=post_id, user_id=str(uuid.uuid4())),
    )
    async with db.transaction() as conn:
        await outbox.append(conn, _SCHEMA, [event])
    return event.event_id


async def _write_many(db: Database, count: int) -> list[uuid.UUID]:
    """`count` events by _WRITERS concurrent writers, as fast as they go."""
    posts = [f"bench-post-{index}" for index in range(64)]
    remaining = iter(range(count))
    ids: list[uuid.UUID] = []

    async def writer() -> None:
        for index in remaining:
            ids.append(await _write(db, posts[index % len(posts)]))

    await asyncio.gather(*(writer() for _ in range(_WRITERS)))
    return ids


async def _lag(db: Database, consumer: Consumer, rate: float, duration: float) -> HdrHistogram:
    ids: list[uuid.UUID] = []
    before = consumer.stats.processed
    writes: set[asyncio.Task[uuid.UUID]] = set()
    interval = 1 / rate
    start = time.perf_counter()
    for index in range(round(rate * duration)):
        await asyncio.sleep(max(0.0, start + index * interval - time.perf_counter()))
        task = asyncio.create_task(_write(db, f"lag-post-{index % 64}"))
        writes.add(task)
        task.add_done_callback(writes.discard)
        task.add_done_callback(lambda done: ids.append(done.result()))
    await asyncio.gather(*list(writes))
    await _applied(db, consumer, ids, before)
    histogram = HdrHistogram(1, _HIGHEST_MICROSECONDS, 3)
    async with db.connection() as conn:
        lags = await conn.fetch(
            f"""SELECT extract(epoch FROM applied_at - committed_at) * 1e6 AS us
                  FROM {_SCHEMA}.effects WHERE event_id = ANY($1::uuid[])""",
            ids,
        )
    for row in lags:
        histogram.record_value(max(1, min(int(row["us"]), _HIGHEST_MICROSECONDS)))
    return histogram


async def _applied(db: Database, consumer: Consumer, ids: list[uuid.UUID], before: int) -> None:
    """Returns once the consumer, which had committed `before` effects when `ids` began to
    be written, has committed theirs too (every effect it commits is of a bench event),
    then checks that their rows are there. Counting 20,000 ids in SQL every 20 ms instead
    took a third of a core from the path being measured."""
    deadline = time.perf_counter() + _SETTLE_TIMEOUT_SECONDS
    while (done := consumer.stats.processed - before) < len(ids):
        if time.perf_counter() > deadline:
            raise BenchError(
                f"only {done} of {len(ids)} events reached the consumer within "
                f"{_SETTLE_TIMEOUT_SECONDS:.0f} s"
            )
        await asyncio.sleep(0.002)
    async with db.connection() as conn:
        rows = await conn.fetchval(
            f"SELECT count(*) FROM {_SCHEMA}.effects WHERE event_id = ANY($1::uuid[])", ids
        )
    if rows != len(ids):
        raise BenchError(f"the consumer applied {len(ids)} events but {rows} effect rows are there")


def table(results: list[Measured], options: EventsBench) -> Table:
    result = Table(
        title=(
            f"bench events: commit → relay → transport → consumer effect; "
            f"drain: a backlog of {options.events} events; "
            f"lag: {options.rate:g} events/s for {options.duration:g} s"
        ),
        title_justify="left",
    )
    result.add_column("")
    for measured in results:
        result.add_column(measured.transport, justify="right")
    rows: list[tuple[str, Callable[[Measured], str]]] = [
        ("outbox writes/s (8 writers)", lambda m: f"{m.writes_per_second:.0f}"),
        ("drain: events/s to effect", lambda m: f"{m.events_per_second:.0f}"),
        ("lag p50 ms", lambda m: f"{m.lag_p50_ms:.1f}"),
        ("lag p99 ms", lambda m: f"{m.lag_p99_ms:.1f}"),
        ("lag max ms", lambda m: f"{m.lag_max_ms:.1f}"),
        ("events measured for lag", lambda m: str(m.lag_events)),
        ("duplicates dropped", lambda m: str(m.duplicates)),
    ]
    for label, value in rows:
        result.add_row(label, *(value(measured) for measured in results))
    return result


@click.command(name="events")
@click.option(
    "--events",
    type=click.IntRange(min=1),
    default=3000,
    show_default=True,
    help="Events of the throughput run.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=200,
    show_default=True,
    help="Events/s of the lag run.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=10,
    show_default=True,
    help="Seconds of the lag run.",
)
def command(events: int, rate: float, duration: float) -> None:
    """Events from commit to consumer effect on the PostgreSQL log and on Kafka, side by
    side: throughput and lag p50/p99."""

    async def main() -> None:
        await bench_events(load_config(), EventsBench(events, rate, duration))

    run(main())
