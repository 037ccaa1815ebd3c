"""`nova migrate`: apply pending migrations and exit."""

import click

from services.cli.common import load_config, run
from services.registry import REGISTRY
from services.runtime.process import migrate_services, open_dependencies


@click.command()
@click.argument("services", nargs=-1, type=click.Choice(sorted(REGISTRY.services)))
def migrate(services: tuple[str, ...]) -> None:
    """Apply pending migrations (of the named services, or all) and exit."""
    specs = [REGISTRY.services[name] for name in services or REGISTRY.services]

    async def apply() -> None:
        async with open_dependencies(load_config()) as deps:
            migrated = await migrate_services(deps.db, specs, REGISTRY.consumers.values())
            for name, applied in migrated.items():
                click.echo(f"{name}: {', '.join(applied) if applied else 'up to date'}")

    run(apply())
