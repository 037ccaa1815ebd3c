"""`nova relay` and `nova events …`: the event path's commands.

Each opens the configured database (embedded PostgreSQL unless NOVA_DATABASE_URL) and
transport (Kafka when NOVA_KAFKA_BOOTSTRAP is set, else the PostgreSQL log), after
applying pending migrations, so it works on a fresh machine as on a deployed one.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import click
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from services.audit.repository import AuditCursor, list_entries
from services.cli.common import load_config, run
from services.registry import REGISTRY
from services.runtime.config import Config
from services.runtime.errors import NovaError
from services.runtime.events.dead_letters import (
    DeadLetter,
    discard_dead_letters,
    list_dead_letters,
    request_replay,
    wait_for_replays,
)
from services.runtime.events.horizon import check_rewind
from services.runtime.events.status import GroupStatus, group_statuses
from services.runtime.events.transports import open_transport
from services.runtime.events.workers import (
    WorkerFactory,
    consumer_worker,
    lag_worker,
    pruning_worker,
    relay_worker,
    running_events,
)
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.metrics import process_telemetry
from services.runtime.process import migrate_services, open_dependencies
from services.runtime.spec import Dependencies, Registry


def event_workers(
    config: Config,
    registry: Registry,
    *,
    relay: bool,
    groups: list[str],
    redis: Redis | None = None,
) -> dict[str, WorkerFactory]:
    """The relay (over every registered outbox) with the retention of the log and of the
    processed-event ids and the consumer lag gauges, and the named consumer groups (on
    every registered topic; `redis` for those that use it)."""
    workers: dict[str, WorkerFactory] = {}
    if relay:
        workers["relay"] = relay_worker(registry.outbox_schemas, config.events)
        workers["pruning"] = pruning_worker(config.events)
        workers["lag"] = lag_worker({group: registry.topics for group in registry.consumers})
    for group in groups:
        workers[group] = consumer_worker(registry.consumers[group], registry.topics, config, redis)
    return workers


@asynccontextmanager
async def _migrated(config: Config, *, with_redis: bool = False) -> AsyncIterator[Dependencies]:
    async with open_dependencies(config, with_redis=with_redis) as deps:
        await migrate_services(deps.db, REGISTRY.services.values(), REGISTRY.consumers.values())
        yield deps


async def _run_workers(config: Config, *, relay: bool, groups: list[str]) -> None:
    """Runs the relay (when `relay`) and the consumer `groups` until SIGINT/SIGTERM, then
    lets each finish what it is doing. Redis is opened only for groups that use it."""
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
        with_redis = any(REGISTRY.consumers[group].uses_redis for group in groups)
        deps = await stack.enter_async_context(_migrated(config, with_redis=with_redis))
        workers = event_workers(config, REGISTRY, relay=relay, groups=groups, redis=deps.redis)
        running = await stack.enter_async_context(running_events(deps.db, config.events, workers))
        click.echo(f"nova: transport: {running.transport.name}")
        if port is not None:
            click.echo(f"nova: metrics: http://{config.bind_host}:{port}/metrics")
        click.echo(f"nova: running {', '.join(running.names)}")
        click.echo("nova: ready (Ctrl-C to stop)")
        sys.stdout.flush()
        await stop.wait()
        click.echo("nova: stopping…")


@click.command(name="relay")
def relay_command() -> None:
    """Publish every service's outbox to the event transport (production: its own
    process; `nova up` runs one too). Several relays may run at once."""
    config = load_config()
    run(_run_workers(config, relay=True, groups=[]))


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
    run(_run_workers(config, relay=False, groups=list(groups or REGISTRY.consumers)))


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
        table = Table("id", "group")
        # Identifiers and positions are copied from here: never wrapped.
        table.add_column("event", no_wrap=True)
        table.add_column("type")
        table.add_column("at", no_wrap=True)
        for name in ("attempts", "failed at", "parked", "error"):
            table.add_column(name)
        for letter in letters:
            table.add_row(
                str(letter.id),
                letter.group,
                _raw(letter.envelope) if letter.undecodable else str(letter.event_id),
                letter.event_type,
                _position(letter),
                str(letter.attempts),
                _state(letter),
                str(letter.parked),
                letter.error,
            )
        _console().print(table)

    run(show())


@dlq.command(name="replay")
@click.argument("ids", nargs=-1, type=int)
@click.option("--group", help="Replay every open dead letter of this group.")
@click.option(
    "--wait",
    "wait_seconds",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the group's consumer to apply them (0: do not wait).",
)
def dlq_replay(ids: tuple[int, ...], group: str | None, wait_seconds: float) -> None:
    """Apply dead letters again once their handler is fixed (by id, or all of --group).

    Only the group that failed gets the event again: its running consumer applies it, then
    the events of its aggregate it held back meanwhile. Exits 1 if one failed again."""
    if bool(ids) == bool(group):
        raise click.UsageError("give dead-letter ids, or --group for all of a group's")

    async def replay() -> None:
        async with _migrated(load_config()) as deps:
            asked = await request_replay(deps.db, list(ids) if ids else None, group=group)
            if not asked:
                click.echo(f"no open dead letters to replay for group {group!r}")
                return
            click.echo(f"asked for the replay of {len(asked)} dead letter(s)")
            if wait_seconds == 0:
                return
            letters = await wait_for_replays(deps.db, [letter.id for letter in asked], wait_seconds)
        failed = 0
        for letter in letters:
            if letter.replayed_at is not None:
                click.echo(f"{letter.id}: applied ({letter.event_type} {letter.event_id})")
            elif letter.replay_requested_at is not None:
                click.echo(
                    f"{letter.id}: still waiting after {wait_seconds:g} s; is a consumer of "
                    f"group {letter.group!r} running (`nova up` or `nova events consume`)? "
                    "It replays the letter when it runs"
                )
            else:
                failed += 1
                click.echo(f"{letter.id}: failed again: {letter.error}")
        if failed:
            raise click.ClickException(f"{failed} dead letter(s) failed again; still open")

    _run_reporting(replay())


@dlq.command(name="discard")
@click.argument("ids", nargs=-1, type=int)
@click.option("--group", help="Discard every open dead letter of this group.")
def dlq_discard(ids: tuple[int, ...], group: str | None) -> None:
    """Give up on dead letters (by id, or all of --group): their events are never
    applied, and the events of their aggregates held back behind them flow on."""
    if bool(ids) == bool(group):
        raise click.UsageError("give dead-letter ids, or --group for all of a group's")

    async def discard() -> None:
        async with _migrated(load_config()) as deps:
            letters = await discard_dead_letters(deps.db, list(ids) if ids else None, group=group)
        parked = sum(letter.parked for letter in letters)
        click.echo(
            f"discarded {len(letters)} dead letter(s); {parked} parked event(s) behind them "
            "will be applied by their group's consumer"
        )

    _run_reporting(discard())


@events.command(name="replay")
@click.option("--group", required=True, help="The consumer group to move back.")
@click.option(
    "--from",
    "since",
    required=True,
    metavar="TIME|beginning",
    help="ISO 8601 time (UTC if no offset) or 'beginning'.",
)
@click.option(
    "--allow-repeats",
    is_flag=True,
    help="Go back past the dedup horizon although effects may be applied again.",
)
def replay_command(group: str, since: str, allow_repeats: bool) -> None:
    """Re-read the log: the group's consumers (stopped first) start again from the first
    event published at or after --from. Only this group re-reads. Effects are not repeated
    for events it processed within its dedup horizon (NOVA_EVENT_RETENTION_HOURS), so an
    older --from is refused unless --allow-repeats says repeats are wanted (effects wiped,
    or a group whose effects are idempotent)."""
    start = _parse_since(since)
    config = load_config()

    async def rewind() -> None:
        if not allow_repeats:
            check_rewind(group, start, config.events.event_retention_seconds)
        async with (
            _migrated(config) as deps,
            open_transport(deps.db, config.events) as transport,
        ):
            await transport.rewind(group, REGISTRY.topics, start)
        where = "the beginning" if start is None else start.isoformat()
        click.echo(f"group {group!r} will re-read {transport.name} from {where}")

    _run_reporting(rewind())


@events.command(name="status")
def status_command() -> None:
    """Each consumer group (those of this build, and any other the transport has
    positions for): per topic its committed position and lag (events not committed yet,
    and the age of the oldest), its members (on the PostgreSQL log: active and standby),
    its open dead letters and the events parked behind them."""
    config = load_config()

    async def show() -> None:
        async with (
            _migrated(config) as deps,
            open_transport(deps.db, config.events) as transport,
        ):
            known = {group: REGISTRY.topics for group in REGISTRY.consumers}
            statuses = await group_statuses(transport, deps.db, known)
        click.echo(f"transport: {transport.name}")
        if not statuses:
            click.echo("no consumer groups")
            return
        _console().print(_status_table(statuses))

    run(show())


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


def _state(letter: DeadLetter) -> str:
    """When it failed, and what has happened to it since."""
    failed = letter.failed_at.isoformat(timespec="seconds")
    if letter.replayed_at is not None:
        return f"{failed}, replayed"
    if letter.discarded_at is not None:
        return f"{failed}, discarded"
    if letter.replay_requested_at is not None:
        return f"{failed}, replay asked"
    return failed


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


def _status_table(statuses: list[GroupStatus]) -> Table:
    """One row per group and topic; the group's own columns on its first row only."""
    table = Table(
        "group",
        "topic",
        "position",
        "lag events",
        "lag seconds",
        "members",
        "dead letters",
        "parked",
    )
    for status in statuses:
        lag = status.lag
        members = f"{lag.members} active" + (f", {lag.standby} standby" if lag.standby else "")
        first = [lag.group]
        rest = [members, str(status.open_dead_letters), str(status.parked)]
        for topic in lag.topics:
            table.add_row(
                *first,
                topic.topic,
                _positions(topic.positions),
                str(topic.events),
                f"{topic.seconds:.1f}",
                *rest,
            )
            first, rest = [""], ["", "", ""]
        if not lag.topics:
            table.add_row(lag.group, "-", "-", "0", "0.0", *rest)
    return table


def _positions(positions: Mapping[int, int | None]) -> str:
    """The log's one position ("42"), or Kafka's per partition ("0:12 1:3 2:-"); "-" for
    nothing committed."""
    shown = {partition: "-" if at is None else str(at) for partition, at in positions.items()}
    if list(shown) == [0]:
        return shown[0]
    return " ".join(f"{partition}:{at}" for partition, at in sorted(shown.items())) or "-"


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=200)
