"""The tenant registry's SQL (nova_tenants.tenants): what `nova tenants` and the tenant
service change, and what every server reads (through services.runtime.tenancy.directory).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from services.runtime.errors import AlreadyExists, InvalidArgument, NotFound
from services.runtime.ids import DEFAULT_TENANT_ID, new_id

SCHEMA = "nova_tenants"
MIGRATIONS = Path(__file__).parent / "migrations"

DEFAULT_SLUG = "default"
SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
"""1 to 40 lowercase letters, digits and inner hyphens: safe in a header, a URL, a log."""
MAX_NAME_LENGTH = 200


@dataclass(frozen=True)
class Quotas:
    """A tenant's own limits; None is no limit of its own."""

    requests_per_second: float | None = None
    burst: int | None = None
    """Calls at once from idle; None: one second's worth of requests_per_second."""
    max_in_flight: int | None = None
    """Of each server's unary calls in flight, at most this many the tenant's."""
    max_users: int | None = None
    max_posts: int | None = None
    max_comments: int | None = None

    def __post_init__(self) -> None:
        if self.requests_per_second is not None and not self.requests_per_second > 0:
            raise InvalidArgument(
                f"requests_per_second must be above 0, got {self.requests_per_second}"
            )
        for name in ("burst", "max_in_flight"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidArgument(f"{name} must be at least 1, got {value}")
        for name in ("max_users", "max_posts", "max_comments"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidArgument(f"{name} must be 0 or more, got {value}")


QUOTA_NAMES = tuple(field.name for field in fields(Quotas))


@dataclass(frozen=True)
class Tenant:
    id: uuid.UUID
    slug: str
    name: str
    created_at: datetime
    quotas: Quotas = Quotas()
    deleted_at: datetime | None = None

    @property
    def is_default(self) -> bool:
        return self.id == DEFAULT_TENANT_ID


def check_slug(slug: str) -> str:
    if not SLUG.fullmatch(slug):
        shown = slug[:40] + ("…" if len(slug) > 40 else "")
        raise InvalidArgument(
            f"tenant {shown!r} is not a tenant slug: 1 to 40 lowercase letters, digits and "
            "hyphens, starting and ending with a letter or digit"
        )
    return slug


def _tenant(row: asyncpg.Record) -> Tenant:
    return Tenant(
        id=row["id"],
        slug=row["slug"],
        name=row["name"],
        created_at=row["created_at"],
        quotas=Quotas(**{name: row[name] for name in QUOTA_NAMES}),
        deleted_at=row["deleted_at"],
    )


async def create(
    conn: asyncpg.Connection, slug: str, name: str = "", *, tenant_id: uuid.UUID | None = None
) -> Tenant:
    """A new tenant; `tenant_id` gives the id (benches and tests whose rows carry a fixed
    one), else a new UUIDv7."""
    check_slug(slug)
    name = name.strip() or slug
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"a tenant's name has at most {MAX_NAME_LENGTH} characters")
    try:
        row = await conn.fetchrow(
            f"INSERT INTO {SCHEMA}.tenants (id, slug, name) VALUES ($1, $2, $3) RETURNING *",
            tenant_id or new_id(),
            slug,
            name,
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(f"a tenant {slug!r} exists already") from None
    assert row is not None
    return _tenant(row)


async def by_slug(conn: asyncpg.Connection, slug: str) -> Tenant | None:
    """The live tenant of that slug."""
    row = await conn.fetchrow(
        f"SELECT * FROM {SCHEMA}.tenants WHERE slug = $1 AND deleted_at IS NULL", slug
    )
    return _tenant(row) if row is not None else None


async def by_id(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> Tenant | None:
    """The tenant of that id, deleted or not (deleted_at says)."""
    row = await conn.fetchrow(f"SELECT * FROM {SCHEMA}.tenants WHERE id = $1", tenant_id)
    return _tenant(row) if row is not None else None


async def live(conn: asyncpg.Connection) -> list[Tenant]:
    rows = await conn.fetch(
        f"SELECT * FROM {SCHEMA}.tenants WHERE deleted_at IS NULL ORDER BY created_at, slug"
    )
    return [_tenant(row) for row in rows]


async def require(conn: asyncpg.Connection, slug: str) -> Tenant:
    tenant = await by_slug(conn, check_slug(slug))
    if tenant is None:
        raise NotFound(f"there is no tenant {slug!r} (`nova tenants list` shows them)")
    return tenant


async def set_quotas(conn: asyncpg.Connection, slug: str, changes: dict[str, Any]) -> Tenant:
    """Sets the quotas named in `changes` (a value of None lifts that limit)."""
    unknown = set(changes) - set(QUOTA_NAMES)
    if unknown:
        raise InvalidArgument(f"no such quota: {', '.join(sorted(unknown))}")
    tenant = await require(conn, slug)
    quotas = replace(tenant.quotas, **changes)  # validates
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(QUOTA_NAMES, start=2))
    row = await conn.fetchrow(
        f"UPDATE {SCHEMA}.tenants SET {assignments} WHERE id = $1 RETURNING *",
        tenant.id,
        *(getattr(quotas, name) for name in QUOTA_NAMES),
    )
    assert row is not None
    return _tenant(row)


async def delete(conn: asyncpg.Connection, slug: str) -> Tenant:
    """Marks the tenant deleted: no call may name it any more, and its tokens stop working."""
    tenant = await require(conn, slug)
    if tenant.is_default:
        raise InvalidArgument("the default tenant cannot be deleted")
    row = await conn.fetchrow(
        f"UPDATE {SCHEMA}.tenants SET deleted_at = now() WHERE id = $1 RETURNING *", tenant.id
    )
    assert row is not None
    return _tenant(row)
