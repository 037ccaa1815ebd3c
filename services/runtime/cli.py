"""The `nova` command: run services, migrate, seed demo data, benchmark."""

import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import click
import uvloop

from services.runtime.app import migrate_services, open_dependencies, serve
from services.runtime.config import Config, ConfigError
from services.runtime.migrations import MigrationError
from services.runtime.registry import SERVICES
from services.runtime.server import PortInUse
from services.runtime.service import ServiceSpec


def load_config() -> Config:
    try:
        return Config.from_env()
    except ConfigError as error:
        raise click.ClickException(f"configuration: {error}") from None


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Runs on uvloop, turning the failures people cause into one-line errors."""
    try:
        uvloop.run(coroutine)
    except (PortInUse, MigrationError, OSError) as error:
        raise click.ClickException(str(error)) from None


@click.group()
def main() -> None:
    """Nova: a gRPC-first social network backend."""
    logging.basicConfig(
        level=load_config().log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # pgserver narrates every start at INFO; its warnings still show.
    logging.getLogger("pgserver").setLevel(logging.WARNING)


@main.command()
def up() -> None:
    """Run every service in this process (embedded PostgreSQL unless NOVA_DATABASE_URL)."""
    run(_serve_until_signal(load_config(), list(SERVICES.values())))


@main.command(name="serve")
@click.argument("service", type=click.Choice(sorted(SERVICES)))
def serve_one(service: str) -> None:
    """Run one service (production: one process per service)."""
    run(_serve_until_signal(load_config(), [SERVICES[service]]))


@main.command()
@click.argument("services", nargs=-1, type=click.Choice(sorted(SERVICES)))
def migrate(services: tuple[str, ...]) -> None:
    """Apply pending migrations (of the named services, or all) and exit."""
    specs = [SERVICES[name] for name in services or SERVICES]

    async def apply() -> None:
        async with open_dependencies(load_config()) as deps:
            for name, applied in (await migrate_services(deps.db, specs)).items():
                click.echo(f"{name}: {', '.join(applied) if applied else 'up to date'}")

    run(apply())


async def _serve_until_signal(config: Config, specs: list[ServiceSpec]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_dependencies(config) as deps:
        await migrate_services(deps.db, specs)
        async with serve(deps, specs) as servers:
            database = (
                "NOVA_DATABASE_URL"
                if config.database_url
                else f"embedded PostgreSQL in {config.data_dir / 'postgres'}"
            )
            click.echo(f"nova: database: {database}")
            for running in servers:
                click.echo(
                    f"nova: {running.spec.name:<15} {running.spec.full_name:<40} "
                    f"{config.bind_host}:{running.port}"
                )
            click.echo("nova: ready (Ctrl-C to stop)", nl=True)
            sys.stdout.flush()
            await stop.wait()
            click.echo("nova: draining…")
