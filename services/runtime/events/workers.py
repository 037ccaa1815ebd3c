"""The event path's background work in a process: the relay and consumers, as tasks.

`nova up` runs them beside the servers, `nova relay` and `nova events consume` alone. A
worker that fails is logged and restarted after a pause rather than taking the process
down: the servers beside it keep serving, and the outbox or the log keeps what waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis

from services.runtime.config import Config
from services.runtime.db import Database
from services.runtime.events.lag_gauges import LagGauges
from services.runtime.events.model import Publisher, Transport
from services.runtime.events.relay import Relay
from services.runtime.events.retention import Retention
from services.runtime.events.settings import EventSettings
from services.runtime.events.transports import open_transport
from services.runtime.spec import ConsumerContext, ConsumerSpec

_log = structlog.get_logger("nova.events")

_RESTART_SECONDS = 1.0
_STOP_TIMEOUT_SECONDS = 10.0

Worker = Callable[[asyncio.Event], Awaitable[None]]
"""Runs until the event is set."""

WorkerFactory = Callable[[Transport, Publisher, Database], Worker]


def pruning_worker(settings: EventSettings) -> WorkerFactory:
    """Retention of the PostgreSQL log and the processed-event ids (retention.py)."""

    def build(transport: Transport, publisher: Publisher, db: Database) -> Worker:
        return Retention(db, settings.event_retention_seconds, settings.event_abandon_seconds).run

    return build


def lag_worker(known: Mapping[str, Sequence[str]]) -> WorkerFactory:
    """The consumer lag gauges (lag_gauges.py) of the groups in `known` (name -> topics)
    and of every other group the transport has positions for."""

    def build(transport: Transport, publisher: Publisher, db: Database) -> Worker:
        return LagGauges(transport, known).run

    return build


def consumer_worker(
    spec: ConsumerSpec, topics: Sequence[str], config: Config, redis: Redis | None = None
) -> WorkerFactory:
    """A consumer group's worker; `redis` is needed by groups that say uses_redis."""
    if spec.uses_redis and redis is None:
        raise ValueError(f"consumer group {spec.group!r} needs Redis, and none was opened")

    def build(transport: Transport, publisher: Publisher, db: Database) -> Worker:
        return spec.build(ConsumerContext(transport, db, topics, config, redis)).run

    return build


@dataclass(frozen=True)
class RunningEvents:
    transport: Transport
    publisher: Publisher
    names: tuple[str, ...]
    """What runs: "relay", then the consumer groups."""


def relay_worker(schemas: list[str], settings: EventSettings) -> WorkerFactory:
    def build(transport: Transport, publisher: Publisher, db: Database) -> Worker:
        return Relay(db, publisher, schemas, settings).run

    return build


@contextlib.asynccontextmanager
async def running_events(
    db: Database, settings: EventSettings, workers: Mapping[str, WorkerFactory]
) -> AsyncIterator[RunningEvents]:
    """Opens the configured transport and runs `workers` (by name) until the block ends;
    then each finishes what it is doing (up to 10 s) and stops."""
    async with (
        open_transport(db, settings) as transport,
        transport.publisher() as publisher,
    ):
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(_supervised(name, build(transport, publisher, db), stop))
            for name, build in workers.items()
        ]
        try:
            yield RunningEvents(transport, publisher, tuple(workers))
        finally:
            stop.set()
            _, pending = await asyncio.wait(tasks, timeout=_STOP_TIMEOUT_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _supervised(name: str, worker: Worker, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await worker(stop)
        except Exception:
            _log.exception("event worker failed; restarting", worker=name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _RESTART_SECONDS)
