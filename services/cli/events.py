"""`nova relay` and `nova events …`: the event path's commands.

Each opens the configured database (embedded PostgreSQL unless NOVA_DATABASE_URL) and
transport (Kafka when NOVA_KAFKA_BOOTSTRAP is set, else the PostgreSQL log), after
applying pending migrations, so it works on a fresh machine as on a deployed one.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from services.audit.repository import AuditCursor, list_entries
from services.cli.common import load_config, run
from services.registry import REGISTRY
from services.runtime.config import Config
from services.runtime.errors import NovaError
from services.runtime.events.dead_letters import (
    DeadLetter,
    list_dead_letters,
    replay_dead_letters,
)
from services.runtime.events.transports import open_transport
from services.runtime.events.workers import (
    WorkerFactory,
    consumer_worker,
    pruning_worker,
    relay_worker,
    running_events,
)
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.metrics import process_telemetry
from services.runtime.process import migrate_services, open_dependencies
from services.runtime.spec import Dependencies, Registry


def event_workers(
    config: Config, registry: Registry, *, relay: bool, groups: list[str]
) -> dict[str, WorkerFactory]:
    """The relay (over every registered outbox) with the retention of the log and of the
    processed-event ids, and the named consumer groups (on every registered topic)."""
    workers: dict[str, WorkerFactory] = {}
    if relay:
        workers["relay"] = relay_worker(registry.outbox_schemas, config.events)
        workers["pruning"] = pruning_worker(config.events)
    for group in groups:
        workers[group] = consumer_worker(registry.consumers[group], registry.topics)
    return workers


@asynccontextmanager
async def _migrated(config: Config) -> AsyncIterator[Dependencies]:
    async with open_dependencies(config) as deps:
        await migrate_services(deps.db, REGISTRY.services.values(), REGISTRY.consumers.values())
        yield deps


async def _run_workers(config: Config, workers: Mapping[str, WorkerFactory]) -> None:
    """Runs `workers` until SIGINT/SIGTERM, then lets each finish what it is doing."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        port = stack.enter_context(
            process_telemetry(
                "nova-events", metrics_host=config.bind_host, metrics_port=config.metrics_port
            )
        )
        deps = await stack.enter_async_context(_migrated(config))
        running = await stack.enter_async_context(running_events(deps.db, config.events, workers))
        click.echo(f"nova: transport: {running.transport.name}")
        if port is not None:
            click.echo(f"nova: metrics: http://{config.bind_host}:{port}/metrics")
        click.echo(f"nova: running {', '.join(running.names)} (Ctrl-C to stop)")
        await stop.wait()
        click.echo("nova: stopping…")


@click.command(name="relay")
def relay_command() -> None:
    """Publish every service's outbox to the event transport (production: its own
    process; `nova up` runs one too). Several relays may run at once."""
    config = load_config()
    run(_run_workers(config, event_workers(config, REGISTRY, relay=True, groups=[])))


@click.group(name="events")
def events() -> None:
    """Consumers, dead letters, replays and the audit log."""


@events.command(name="consume")
@click.option(
    "--group",
    "groups",
    type=click.Choice(sorted(REGISTRY.consumers)),
    multiple=True,
    help="Consumer group to run (repeatable); default: all.",
)
def consume(groups: tuple[str, ...]) -> None:
    """Run consumer groups alone (production: their own processes; `nova up` runs them)."""
    config = load_config()
    workers = event_workers(
        config, REGISTRY, relay=False, groups=list(groups or REGISTRY.consumers)
    )
    run(_run_workers(config, workers))


@events.group(name="dlq", invoke_without_command=True)
@click.option("--group", help="Only this consumer group's dead letters.")
@click.option("--all", "include_replayed", is_flag=True, help="Include replayed ones.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.pass_context
def dlq(ctx: click.Context, group: str | None, include_replayed: bool, limit: int) -> None:
    """List dead letters: events a consumer gave up on, with the error (newest first)."""
    if ctx.invoked_subcommand is not None:
        return

    async def show() -> None:
        async with _migrated(load_config()) as deps:
            letters = await list_dead_letters(deps.db, group, include_replayed, limit)
        if not letters:
            click.echo("no dead letters" + (f" for group {group!r}" if group else ""))
            return
        table = Table("id", "group", "event", "type", "at", "attempts", "failed at", "error")
        for letter in letters:
            table.add_row(
                str(letter.id),
                letter.group,
                _raw(letter.envelope) if letter.undecodable else str(letter.event_id),
                letter.event_type,
                _position(letter),
                str(letter.attempts),
                letter.failed_at.isoformat(timespec="seconds"),
                letter.error,
            )
        _console().print(table)

    run(show())


@dlq.command(name="replay")
@click.argument("ids", nargs=-1, type=int)
@click.option("--group", help="Replay every unreplayed dead letter of this group.")
def dlq_replay(ids: tuple[int, ...], group: str | None) -> None:
    """Publish dead letters again (by id, or all of --group) once their handler is fixed;
    groups that already processed them drop them as duplicates."""
    if bool(ids) == bool(group):
        raise click.UsageError("give dead-letter ids, or --group for all of a group's")
    config = load_config()

    async def replay() -> None:
        async with (
            _migrated(config) as deps,
            open_transport(deps.db, config.events) as transport,
            transport.publisher() as publisher,
        ):
            letters = await replay_dead_letters(
                deps.db, publisher, list(ids) if ids else None, group=group
            )
        click.echo(f"replayed {len(letters)} dead letter(s)")

    _run_reporting(replay())


@events.command(name="replay")
@click.option("--group", required=True, help="The consumer group to move back.")
@click.option(
    "--from",
    "since",
    required=True,
    metavar="TIME|beginning",
    help="ISO 8601 time (UTC if no offset) or 'beginning'.",
)
def replay_command(group: str, since: str) -> None:
    """Re-read the log: the group's consumers (stopped first) start again from the first
    event published at or after --from. Their effects are not repeated for events they
    already processed; this is for consumers whose processed record was cleared, or new
    groups."""
    start = _parse_since(since)
    config = load_config()

    async def rewind() -> None:
        async with (
            _migrated(config) as deps,
            open_transport(deps.db, config.events) as transport,
        ):
            await transport.rewind(group, REGISTRY.topics, start)
        where = "the beginning" if start is None else start.isoformat()
        click.echo(f"group {group!r} will re-read {transport.name} from {where}")

    _run_reporting(rewind())


@events.command(name="audit")
@click.option("--tenant", type=click.UUID, default=str(DEFAULT_TENANT_ID), show_default=True)
@click.option("--aggregate", help="Only events of this aggregate id (a user or post id).")
@click.option("--type", "event_type", help="Only this event type, e.g. PostCreated.")
@click.option("--limit", type=click.IntRange(min=1, max=1000), default=50, show_default=True)
@click.option("--after", help="The cursor printed under the previous page.")
def audit_command(
    tenant: uuid.UUID, aggregate: str | None, event_type: str | None, limit: int, after: str | None
) -> None:
    """A tenant's audit log, newest first: every domain event, as the audit group recorded
    it."""
    try:
        cursor = AuditCursor.decode(after) if after else None
    except NovaError as error:
        raise click.BadParameter(str(error), param_hint="--after") from None

    async def show() -> None:
        async with _migrated(load_config()) as deps:
            page = await list_entries(
                deps.db,
                tenant,
                aggregate_id=aggregate,
                event_type=event_type,
                after=cursor,
                limit=limit,
            )
        if not page.entries:
            click.echo(
                f"no audited events for tenant {tenant}" + (" after that cursor" if cursor else "")
            )
            return
        table = Table("occurred at", "event", "aggregate", "event id", "summary")
        for entry in page.entries:
            table.add_row(
                entry.occurred_at.isoformat(timespec="milliseconds"),
                entry.event_type,
                f"{entry.aggregate_type} {entry.aggregate_id}",
                str(entry.event_id),
                ", ".join(f"{key}={value}" for key, value in entry.summary.items()),
            )
        _console().print(table)
        if page.next_cursor is not None:
            click.echo(f"more: --after {page.next_cursor.encode()}")

    _run_reporting(show())


def _run_reporting(coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        run(coroutine)
    except NovaError as error:
        raise click.ClickException(str(error)) from None


def _parse_since(value: str) -> datetime | None:
    if value.lower() == "beginning":
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an ISO 8601 time (2026-11-28T12:00:00Z) nor 'beginning'",
            param_hint="--from",
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _position(letter: DeadLetter) -> str:
    """Where the dead letter was in the log: topic[partition]@offset (the log's seq)."""
    if letter.position is None:
        return letter.topic
    return f"{letter.topic}[{letter.partition}]@{letter.position}"


_RAW_SHOWN = 12
"""Bytes of an undecodable record shown in the listing (all are kept in the table)."""


def _raw(data: bytes) -> str:
    """What stands in the event column for a record that was not an event (it has no
    event id): its size and first bytes in hex, enough to tell whose it was."""
    more = "…" if len(data) > _RAW_SHOWN else ""
    return f"{len(data)} bytes {data[:_RAW_SHOWN].hex()}{more}"


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=200)
