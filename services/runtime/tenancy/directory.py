"""The registry as a server reads it: every call names a tenant, so lookups are cached.

An entry lives `ttl_seconds` (5 s): a tenant deleted, or a quota changed, in one process
takes effect in every other within that. Unknown slugs are remembered too, so a caller
sending random ones costs one query per slug per TTL, and memory is bounded (least
recently used entries go first). Concurrent misses on one key share one query.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import UTC, datetime

from services.runtime.db import Database
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.single_flight import SingleFlight
from services.runtime.tenancy import registry
from services.runtime.tenancy.registry import DEFAULT_SLUG, Tenant

DEFAULT_TENANT = Tenant(
    id=DEFAULT_TENANT_ID,
    slug=DEFAULT_SLUG,
    name="Default",
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
)
"""The default tenant as a process without a registry knows it (no quotas)."""

TTL_SECONDS = 5.0
MAX_ENTRIES = 10_000


class TenantDirectory:
    """``tenant = await directory.by_slug("acme")``; None when there is no such live tenant.

    Built without a database (tests of the server chain alone, benches) it knows only the
    default tenant."""

    def __init__(
        self,
        db: Database | None,
        *,
        ttl_seconds: float = TTL_SECONDS,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[Tenant | None, float]] = OrderedDict()
        self._flights: SingleFlight[Hashable, Tenant | None] = SingleFlight()

    @property
    def loads(self) -> int:
        """Registry queries made (what tests count)."""
        return self._flights.loads

    async def by_slug(self, slug: str) -> Tenant | None:
        if self._db is None:
            return DEFAULT_TENANT if slug == DEFAULT_SLUG else None
        return await self._get(("slug", slug))

    async def by_id(self, tenant_id: uuid.UUID) -> Tenant | None:
        """The live tenant of that id (a deleted one is None)."""
        if self._db is None:
            return DEFAULT_TENANT if tenant_id == DEFAULT_TENANT_ID else None
        return await self._get(("id", tenant_id))

    def forget(self) -> None:
        """Drops every entry: the next lookups read the registry (after a change made here)."""
        self._entries.clear()

    async def _get(self, key: tuple[str, object]) -> Tenant | None:
        entry = self._entries.get(key)
        now = self._clock()
        if entry is not None and entry[1] > now:
            self._entries.move_to_end(key)
            return entry[0]
        tenant = await self._flights.run(key, lambda: self._load(key))
        self._entries[key] = (tenant, self._clock() + self._ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return tenant

    async def _load(self, key: tuple[str, object]) -> Tenant | None:
        assert self._db is not None
        kind, value = key
        async with self._db.connection() as conn:
            if kind == "slug":
                assert isinstance(value, str)
                return await registry.by_slug(conn, value)
            assert isinstance(value, uuid.UUID)
            tenant = await registry.by_id(conn, value)
        return tenant if tenant is not None and tenant.deleted_at is None else None
