"""The process's Redis client: its settings (NOVA_REDIS_*) and a bounded connection pool."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis


@dataclass(frozen=True)
class RedisSettings:
    url: str | None = None
    """NOVA_REDIS_URL; None means: start an embedded Redis in the data folder."""
    pool_size: int = 16
    """Connections per process; a command waits for one at most `timeout_seconds`."""
    timeout_seconds: float = 1.0
    """Connecting, each reply, and the wait for a pooled connection: Redis is a cache in
    front of PostgreSQL, so a slow one must fail fast and let the caller go around it."""


@asynccontextmanager
async def open_redis(url: str, settings: RedisSettings) -> AsyncIterator[Redis]:
    """A client on a pool of at most `settings.pool_size` connections, closed at exit.
    The pool waits for a free connection (up to the timeout) rather than failing at once
    at its limit, as redis-py's default pool does; and nothing is retried, so a command
    never takes much longer than the timeout."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=settings.pool_size,
        timeout=settings.timeout_seconds,
        socket_timeout=settings.timeout_seconds,
        socket_connect_timeout=settings.timeout_seconds,
    )
    client = Redis.from_pool(pool)
    try:
        yield client
    finally:
        await client.aclose()
