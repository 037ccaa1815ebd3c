"""The `nova` command: run services, migrate, seed demo data, benchmark."""

import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import click
import uvloop

from gateway.server import serve_gateway
from services.runtime.app import migrate_services, open_dependencies, serve
from services.runtime.bench import breaker, feed, hedging, overhead, overload, rotation
from services.runtime.bench import events as events_bench
from services.runtime.bench.loadgen import Load
from services.runtime.bench.rpc import BenchError, RpcBench, bench_rpc
from services.runtime.config import Config, ConfigError
from services.runtime.event_commands import event_workers, events, relay_command
from services.runtime.events.model import TransportError
from services.runtime.events.workers import running_events
from services.runtime.logs import configure_logging
from services.runtime.metrics import process_telemetry
from services.runtime.migrations import MigrationError
from services.runtime.registry import CONSUMERS, SERVICES
from services.runtime.seed import SeedError, SeedPlan, seed_and_report
from services.runtime.server import PortInUse
from services.runtime.service import ServiceSpec


def load_config() -> Config:
    try:
        return Config.from_env()
    except ConfigError as error:
        raise click.ClickException(f"configuration: {error}") from None


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Runs on uvloop, turning the failures people cause into one-line errors.

    SIGTERM cancels the command, so its context managers (servers, subprocesses, pools)
    close as they would on Ctrl-C; `up` and `serve` replace this with a graceful drain.
    """

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await coroutine

    try:
        uvloop.run(main())
    except asyncio.CancelledError:
        raise SystemExit(128 + signal.SIGTERM) from None
    except (PortInUse, MigrationError, TransportError, OSError) as error:
        raise click.ClickException(str(error)) from None
    except asyncpg.PostgresError as error:
        raise click.ClickException(f"database: {error}") from None


@click.group()
def main() -> None:
    """Nova: a gRPC-first social network backend."""
    configure_logging(load_config().log_level)
    # pgserver narrates every start at INFO; its warnings still show.
    for chatty in ("pgserver", "httpx", "aiokafka"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


@main.command()
def up() -> None:
    """Run every service and the GraphQL gateway in this process (embedded PostgreSQL
    unless NOVA_DATABASE_URL)."""
    run(_serve_until_signal(load_config(), list(SERVICES.values()), gateway=True, events=True))


@main.command(name="serve")
@click.argument("service", type=click.Choice([*sorted(SERVICES), "gateway"]))
def serve_one(service: str) -> None:
    """Run one service, or the gateway (production: one process each)."""
    if service == "gateway":
        run(_serve_until_signal(load_config(), [], gateway=True, events=False))
    else:
        run(_serve_until_signal(load_config(), [SERVICES[service]], gateway=False, events=False))


@main.command()
@click.argument("services", nargs=-1, type=click.Choice(sorted(SERVICES)))
def migrate(services: tuple[str, ...]) -> None:
    """Apply pending migrations (of the named services, or all) and exit."""
    specs = [SERVICES[name] for name in services or SERVICES]

    async def apply() -> None:
        async with open_dependencies(load_config()) as deps:
            migrated = await migrate_services(deps.db, specs, CONSUMERS.values())
            for name, applied in migrated.items():
                click.echo(f"{name}: {', '.join(applied) if applied else 'up to date'}")

    run(apply())


@main.command(name="seed")
@click.option("--users", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--posts-per-user", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--follows-per-user", type=click.IntRange(min=0), default=20, show_default=True)
@click.option("--comments-per-post", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--likes-per-post", type=click.IntRange(min=0), default=5, show_default=True)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Calls in flight at most.",
)
@click.option("--seed", "rng_seed", type=int, help="Seed of the RNG, for the same data shape.")
def seed_command(
    users: int,
    posts_per_user: int,
    follows_per_user: int,
    comments_per_post: int,
    likes_per_post: int,
    concurrency: int,
    rng_seed: int | None,
) -> None:
    """Create demo users, follows, posts, comments and likes through the gRPC APIs
    (of the services at NOVA_USER_ADDRESS and NOVA_CONTENT_ADDRESS)."""
    plan = SeedPlan(
        users=users,
        posts_per_user=posts_per_user,
        follows_per_user=follows_per_user,
        comments_per_post=comments_per_post,
        likes_per_post=likes_per_post,
    )
    addresses = load_config().addresses
    try:
        run(seed_and_report(addresses, plan, concurrency=concurrency, rng_seed=rng_seed))
    except SeedError as error:
        raise click.ClickException(str(error)) from None


@main.group()
def bench() -> None:
    """Measure latency and throughput with an open-loop load generator."""


@bench.command(name="rpc")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=500,
    show_default=True,
    help="Calls started per second, whatever the replies do.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=10,
    show_default=True,
    help="Seconds measured per rpc.",
)
@click.option(
    "--warmup",
    type=click.FloatRange(min=0),
    default=2,
    show_default=True,
    help="Seconds of unmeasured calls before each rpc's measurement.",
)
@click.option(
    "--max-outstanding",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Calls in flight at most; calls due beyond it count as client_overloaded errors.",
)
@click.option(
    "--users",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Demo users to seed first.",
)
def bench_rpc_command(
    rate: float, duration: float, warmup: float, max_outstanding: int, users: int
) -> None:
    """Latency of Health/Check, GetUser, BatchGetUsers and BatchGetPosts at a fixed rate,
    against `nova up` started in a subprocess on free ports."""
    try:
        load = Load(rate=rate, duration=duration, warmup=warmup, max_outstanding=max_outstanding)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    try:
        run(bench_rpc(RpcBench(load=load, users=users)))
    except (SeedError, BenchError) as error:
        raise click.ClickException(str(error)) from None


for scenario in (overload, overhead, breaker, hedging, rotation, feed, events_bench):
    bench.add_command(scenario.command)
main.add_command(relay_command)
main.add_command(events)


async def _serve_until_signal(
    config: Config, specs: list[ServiceSpec], *, gateway: bool, events: bool
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    lines = []
    async with AsyncExitStack() as stack:
        scrape_port = stack.enter_context(
            process_telemetry(
                "nova", metrics_host=config.bind_host, metrics_port=config.metrics_port
            )
        )
        if scrape_port is not None:
            lines.append(f"metrics: http://{config.bind_host}:{scrape_port}/metrics")
        addresses = dict(config.addresses)
        if specs:
            deps = await stack.enter_async_context(open_dependencies(config))
            await migrate_services(deps.db, specs, CONSUMERS.values() if events else ())
            servers = await stack.enter_async_context(serve(deps, specs))
            lines.append(
                "database: NOVA_DATABASE_URL"
                if config.database_url
                else f"database: embedded PostgreSQL in {config.data_dir / 'postgres'}"
            )
            for running in servers:
                address = f"{config.bind_host}:{running.port}"
                # The gateway in this process calls the ports actually bound (0 = any).
                addresses[running.spec.name] = address
                lines.append(f"{running.spec.name:<15} {running.spec.full_name:<40} {address}")
            if events:
                workers = event_workers(config, relay=True, groups=list(CONSUMERS))
                worked = await stack.enter_async_context(
                    running_events(deps.db, config.events, workers)
                )
                lines.append(
                    f"{'events':<15} {worked.transport.name + ' transport':<40} "
                    f"{', '.join(worked.names)}"
                )
        if gateway:
            running_gateway = await stack.enter_async_context(
                serve_gateway(
                    config.gateway,
                    addresses,
                    host=config.bind_host,
                    grace_seconds=config.shutdown_grace_seconds,
                    clients=config.clients,
                )
            )
            url = f"http://{config.bind_host}:{running_gateway.port}/graphql"
            lines.append(f"{'gateway':<15} {'GraphQL (GraphiQL in a browser)':<40} {url}")
        for line in lines:
            click.echo(f"nova: {line}")
        click.echo("nova: ready (Ctrl-C to stop)")
        sys.stdout.flush()
        await stop.wait()
        click.echo("nova: draining…")
