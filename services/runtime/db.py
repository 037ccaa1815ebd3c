"""The process's PostgreSQL pool, with a bounded wait for a connection.

Waiting for a connection is the first place an overloaded service queues; past the bound
the call fails at once with RESOURCE_EXHAUSTED (the plan's "pool exhaustion early
rejection") instead of hanging until its deadline. Each such failure is counted in
`nova.db.pool.exhausted`: a pool too small for the load shows there before anywhere else.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast

import asyncpg
from opentelemetry import metrics

from services.runtime.errors import ResourceExhausted


@dataclass(frozen=True)
class Database:
    pool: asyncpg.Pool
    acquire_timeout_s: float
    exhausted: metrics.Counter

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            conn = await self.pool.acquire(timeout=self.acquire_timeout_s)
        except TimeoutError:
            self.exhausted.add(1)
            raise ResourceExhausted(
                f"the database is busy: no connection came free within "
                f"{self.acquire_timeout_s * 1000:.0f} ms; retry with backoff"
            ) from None
        try:
            # A pool proxy behaves as the connection it wraps.
            yield cast(asyncpg.Connection, conn)
        finally:
            await self.pool.release(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """One connection and one transaction: ``async with db.transaction() as conn: ...``."""
        async with self.connection() as conn, conn.transaction():
            yield conn


class _KeptAsIs(asyncpg.Connection):
    """A connection handed back to its pool without asyncpg's reset: no `SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` round trip after every
    call (5% of the services' CPU on a feed page, and PostgreSQL's for it). An open
    transaction is still rolled back."""

    def get_reset_query(self) -> str:
        return ""


@asynccontextmanager
async def open_database(
    dsn: str,
    *,
    size: int,
    acquire_timeout_ms: int,
    meter: metrics.Meter | None = None,
    application_name: str = "nova",
    session_state: bool = True,
) -> AsyncIterator[Database]:
    """The pool; its metrics go to `meter`, by default the process's (services.runtime.metrics).
    `application_name` shows in pg_stat_activity, which pool a connection belongs to.
    `session_state=False` for a pool whose users leave nothing on a connection (no LISTEN,
    no session lock or setting left behind): it skips the reset on each release."""
    meter = meter if meter is not None else metrics.get_meter("nova.db")
    exhausted = meter.create_counter(
        "nova.db.pool.exhausted",
        unit="{call}",
        description="Waits for a pooled connection that timed out (answered RESOURCE_EXHAUSTED).",
    )
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min(2, size),
        max_size=size,
        command_timeout=30,
        server_settings={"application_name": application_name},
        connection_class=asyncpg.Connection if session_state else _KeptAsIs,
    )
    try:
        yield Database(pool=pool, acquire_timeout_s=acquire_timeout_ms / 1000, exhausted=exhausted)
    finally:
        await asyncio.wait_for(pool.close(), timeout=10)
