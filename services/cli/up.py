"""`nova up` (every service, the gateway and the event workers in one process) and
`nova serve <service|gateway>` (one of them, as in production)."""

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import click

from gateway.server import RunningGateway, serve_gateway
from gateway.settings import GatewaySettings
from services.cli.common import load_config, run
from services.cli.events import event_workers
from services.cli.gateway import (
    MAX_GATEWAY_WORKERS,
    gateway_targets,
    load_gateway_settings,
    load_gateway_workers,
)
from services.cli.processes import serve_gateway_workers, up_in_processes
from services.registry import REGISTRY
from services.runtime.config import Config, ConfigError
from services.runtime.db import Database
from services.runtime.events.workers import running_events
from services.runtime.metrics import process_telemetry
from services.runtime.process import (
    database_url,
    migrate_services,
    open_dependencies,
    open_event_database,
    redis_url,
    serve,
)
from services.runtime.spec import Dependencies, Registry

_WORKERS = click.IntRange(1, MAX_GATEWAY_WORKERS)


@click.command()
@click.option(
    "--processes",
    is_flag=True,
    help="Each service, the event workers and the gateway in processes of their own, "
    "as production runs them.",
)
@click.option(
    "--workers",
    type=_WORKERS,
    help="Gateway worker processes, with --processes (default: NOVA_GATEWAY_WORKERS, 1).",
)
def up(processes: bool, workers: int | None) -> None:
    """Run every service and the GraphQL gateway in this process (embedded PostgreSQL
    unless NOVA_DATABASE_URL, embedded Redis unless NOVA_REDIS_URL)."""
    config, gateway = load_config(), load_gateway_settings(mode="development")
    if processes:
        run(up_in_processes(config, gateway.port, workers or load_gateway_workers()))
        return
    if workers is not None:
        raise click.UsageError("--workers needs --processes (one process has one gateway)")
    services = list(REGISTRY.services)
    run(
        _until_signal(
            config, REGISTRY, services, gateway, events=True, development=True, redis=True
        )
    )


@click.command(name="serve")
@click.argument("service", type=click.Choice([*sorted(REGISTRY.services), "gateway"]))
@click.option(
    "--workers",
    type=_WORKERS,
    help="The gateway only: worker processes sharing its port, about one per core "
    "(default: NOVA_GATEWAY_WORKERS, 1).",
)
@click.option("--shared-port", is_flag=True, hidden=True)
def serve_one(service: str, workers: int | None, shared_port: bool) -> None:
    """Run one service, or the gateway, in production mode (one process each): it needs
    NOVA_AUTH_SECRET, and the gateway shows no GraphiQL, introspection or stack traces
    unless NOVA_GATEWAY_MODE=development."""
    config = load_config()
    if service == "gateway":
        gateway = load_gateway_settings(mode="production")
        workers = workers or load_gateway_workers()
        if workers > 1:
            run(serve_gateway_workers(config, gateway.port, workers))
            return
        run(
            _until_signal(
                config,
                REGISTRY,
                [],
                gateway,
                events=False,
                development=False,
                shared_port=shared_port,
            )
        )
    elif workers is not None:
        raise click.UsageError("--workers applies to the gateway only")
    else:
        run(_until_signal(config, REGISTRY, [service], None, events=False, development=False))


@dataclass
class Running:
    """What `running` started."""

    banner: list[str] = field(default_factory=list)
    """One line per endpoint, as `nova up` prints them."""
    gateway: RunningGateway | None = None
    deps: Dependencies | None = None
    """The services' database, tokens and Redis (if asked for), when any service runs."""
    events_db: Database | None = None
    """The event workers' own pool (NOVA_EVENTS_DB_POOL_SIZE), when they run."""


def _check_event_pool(config: Config, groups: int) -> None:
    """The relay pins a connection (its LISTEN) and works on another; each consumer group
    pins one (its subscription) and works on another; retention and the lag gauges take
    one now and then. Fewer would leave a worker waiting for a connection for good."""
    needed = 3 + 2 * groups
    if config.events_db_pool_size < needed:
        raise ConfigError(
            f"NOVA_EVENTS_DB_POOL_SIZE={config.events_db_pool_size} is too small for the relay "
            f"and {groups} consumer group(s): they need at least {needed} connections"
        )


@asynccontextmanager
async def running(
    config: Config,
    registry: Registry,
    services: Sequence[str],
    gateway: GatewaySettings | None,
    *,
    events: bool,
    development: bool = True,
    redis: bool = False,
    shared_port: bool = False,
) -> AsyncIterator[Running]:
    """Runs the named services of `registry` (migrated first), the gateway when given
    settings (calling every registered service), and the relay and every consumer group
    when `events`; `development` allows a signing key of the data folder's (`nova up`).
    Redis is opened for the services when `redis` (`nova up`) or when one of them
    declares `uses_redis`. `shared_port`: the gateway is one of several workers on its
    port (services/cli/processes.py). On exit each drains and stops."""
    specs = [registry.services[name] for name in services]
    started = Running()
    lines = started.banner
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
            dsn = await stack.enter_async_context(database_url(config))
            with_redis = (
                redis
                or any(spec.uses_redis for spec in specs)
                or (events and any(group.uses_redis for group in registry.consumers.values()))
            )
            redis_at = await stack.enter_async_context(redis_url(config)) if with_redis else None
            deps = started.deps = await stack.enter_async_context(
                open_dependencies(
                    config,
                    development=development,
                    dsn=dsn,
                    with_redis=with_redis,
                    redis_address=redis_at,
                    with_clickhouse=any(spec.clickhouse_migrations for spec in specs),
                )
            )
            consumers = list(registry.consumers.values()) if events else []
            await migrate_services(deps.db, specs, consumers)
            servers = await stack.enter_async_context(serve(deps, specs))
            lines.append(
                "database: NOVA_DATABASE_URL"
                if config.database_url
                else f"database: embedded PostgreSQL in {config.data_dir / 'postgres'}"
            )
            if redis_at is not None:
                # Not NOVA_REDIS_URL's value: it may hold a password.
                lines.append(
                    "redis: NOVA_REDIS_URL"
                    if config.redis.url
                    else f"redis: embedded Redis in {config.data_dir / 'redis'}, {redis_at}"
                )
            if deps.clickhouse is not None:
                # Not NOVA_CLICKHOUSE_URL's value: it may hold a password.
                analytics = config.analytics
                chdb = analytics.chdb_path or config.data_dir / "clickhouse"
                lines.append(
                    f"clickhouse: NOVA_CLICKHOUSE_URL, database {analytics.database}"
                    if analytics.clickhouse_url
                    else f"clickhouse: embedded chdb in {chdb}, database {analytics.database}"
                )
            for server in servers:
                address = f"{config.bind_host}:{server.port}"
                # The gateway in this process calls the ports actually bound (0 = any).
                addresses[server.spec.name] = address
                lines.append(f"{server.spec.name:<15} {server.spec.full_name:<40} {address}")
            if events:
                workers = event_workers(
                    config,
                    registry,
                    relay=True,
                    groups=[c.group for c in consumers],
                    redis=deps.redis,
                )
                _check_event_pool(config, len(consumers))
                # Their own pool: a busy relay must not take the connections RPCs wait for.
                events_db = started.events_db = await stack.enter_async_context(
                    open_event_database(config, dsn)
                )
                worked = await stack.enter_async_context(
                    running_events(events_db, config.events, workers)
                )
                lines.append(
                    f"{'events':<15} {worked.transport.name + ' transport':<40} "
                    f"{', '.join(worked.names)}"
                )
        if gateway is not None:
            running_gateway = started.gateway = await stack.enter_async_context(
                serve_gateway(
                    gateway,
                    gateway_targets(registry, addresses),
                    host=config.bind_host,
                    grace_seconds=config.shutdown_grace_seconds,
                    clients=config.clients,
                    shared_port=shared_port,
                )
            )
            url = f"http://{config.bind_host}:{running_gateway.port}/graphql"
            lines.append(f"{'gateway':<15} {'GraphQL (GraphiQL in a browser)':<40} {url}")
        yield started


async def _until_signal(
    config: Config,
    registry: Registry,
    services: Sequence[str],
    gateway: GatewaySettings | None,
    *,
    events: bool,
    development: bool,
    redis: bool = False,
    shared_port: bool = False,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running(
        config,
        registry,
        services,
        gateway,
        events=events,
        development=development,
        redis=redis,
        shared_port=shared_port,
    ) as started:
        for line in started.banner:
            click.echo(f"nova: {line}")
        click.echo("nova: ready (Ctrl-C to stop)")
        sys.stdout.flush()
        await stop.wait()
        click.echo("nova: draining…")
