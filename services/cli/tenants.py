"""`nova tenants …`: the tenant registry from the command line, and admin tokens.

The same operations as nova.tenant.v1.TenantService, on the database directly (migrated
first), for an operator on a machine that reaches it.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import click

from services.cli.common import load_config, run
from services.registry import REGISTRY
from services.runtime.auth import TokenCodec
from services.runtime.errors import NovaError
from services.runtime.process import migrate_services, open_dependencies, signing_key
from services.runtime.tenancy import registry
from services.runtime.tenancy.registry import QUOTA_NAMES, Tenant

MAX_ADMIN_TOKEN_HOURS = 24 * 30


@click.group()
def tenants() -> None:
    """Create, list, limit and delete tenants; issue admin tokens."""


def _describe(tenant: Tenant) -> dict[str, Any]:
    quotas = {
        name: value for name in QUOTA_NAMES if (value := getattr(tenant.quotas, name)) is not None
    }
    return {
        "id": str(tenant.id),
        "slug": tenant.slug,
        "name": tenant.name,
        "created_at": tenant.created_at.isoformat(),
        "quotas": quotas,
    }


def _on_registry(operation: Any) -> Any:
    """Runs `operation(conn)` in a transaction on the migrated database, printing NovaErrors
    as one-line errors."""

    async def apply() -> None:
        async with open_dependencies(load_config()) as deps:
            await migrate_services(deps.db, REGISTRY.services.values(), REGISTRY.consumers.values())
            async with deps.db.transaction() as conn:
                await operation(conn)

    try:
        run(apply())
    except NovaError as error:
        raise click.ClickException(str(error)) from None


@tenants.command(name="create")
@click.argument("slug")
@click.option("--name", default="", help="Shown to people; the slug when not given.")
def create_command(slug: str, name: str) -> None:
    """Create the tenant SLUG."""

    async def operation(conn: Any) -> None:
        tenant = await registry.create(conn, slug, name)
        click.echo(json.dumps(_describe(tenant)))

    _on_registry(operation)


@tenants.command(name="list")
def list_command() -> None:
    """List the live tenants, one JSON object a line."""

    async def operation(conn: Any) -> None:
        for tenant in await registry.live(conn):
            click.echo(json.dumps(_describe(tenant)))

    _on_registry(operation)


@tenants.command(name="quota")
@click.argument("slug")
@click.option(
    "--requests-per-second", metavar="N|none", help="Calls a second, every process together."
)
@click.option(
    "--burst", metavar="N|none", help="Calls at once from idle (default: a second's worth)."
)
@click.option("--max-in-flight", metavar="N|none", help="Unary calls in flight per server.")
@click.option("--max-users", metavar="N|none")
@click.option("--max-posts", metavar="N|none")
@click.option("--max-comments", metavar="N|none")
def quota_command(slug: str, **options: str | None) -> None:
    """Set the quotas of SLUG; `none` lifts one, those not named keep their value."""
    changes: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        try:
            changes[name] = (
                None
                if value == "none"
                else (float(value) if name == "requests_per_second" else int(value))
            )
        except ValueError:
            raise click.BadParameter(
                f"{value!r} is not a number (or `none`)", param_hint=f"--{name.replace('_', '-')}"
            ) from None
    if not changes:
        raise click.UsageError("name at least one quota to set, e.g. --requests-per-second 100")

    async def operation(conn: Any) -> None:
        tenant = await registry.set_quotas(conn, slug, changes)
        click.echo(json.dumps(_describe(tenant)))

    _on_registry(operation)


@tenants.command(name="delete")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Confirm: a deleted tenant cannot be restored.")
def delete_command(slug: str, yes: bool) -> None:
    """Delete the tenant SLUG: no call may name it again and its tokens stop working."""
    if not yes:
        raise click.UsageError(
            f"deleting {slug!r} cannot be undone: no call may name it again and its "
            "tokens stop working; add --yes to confirm"
        )

    async def operation(conn: Any) -> None:
        tenant = await registry.delete(conn, slug)
        click.echo(f"deleted tenant {tenant.slug} ({tenant.id})")

    _on_registry(operation)


@tenants.command(name="admin-token")
@click.option("--name", default="operator", show_default=True, help="Who holds it (logged).")
@click.option(
    "--hours", type=click.IntRange(1, MAX_ADMIN_TOKEN_HOURS), default=1, show_default=True
)
def admin_token_command(name: str, hours: int) -> None:
    """Print an admin token for nova.tenant.v1.TenantService (signed with NOVA_AUTH_SECRET,
    or the development key of `nova up`)."""
    config = load_config()
    codec = TokenCodec(
        secret=signing_key(config, development=True),
        ttl=timedelta(hours=hours),
        audience=config.auth_audience,
    )
    token, _ = codec.issue_admin(name, timedelta(hours=hours))
    click.echo(token)
