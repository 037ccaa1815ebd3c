"""What the benchmarks share: the server processes and servers they measure, the channels
they call them on, how a command runs and how its tables print.

A server measured for its CPU or its RSS runs in a process of its own, so the load
generator's CPU is not charged to it: `nova up` (`nova_up`), or one server a scenario
builds (`server_process`, whose body is `serve_until_terminated`). Scenarios that measure
a client run their Health servers in-process instead (`HealthServer`).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import click
import grpc
import psutil
import structlog
import uvloop
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from rich.console import Console

from services.cli import common
from services.cli.seed import SeedError
from services.registry import REGISTRY
from services.runtime.auth import TokenCodec
from services.runtime.logs import configure_logging
from services.runtime.logs import flush as flush_logs
from services.runtime.metrics import process_telemetry
from services.runtime.server import chained_server, freeze_startup_heap
from services.runtime.server_layers import ServerLayers
from tests.bench.loadgen import LoadResult
from tests.brokers import free_port

CHANNELS = 4
"""Calls rotate over this many connections per server, as a client pool would; one HTTP/2
connection would serialise everything through a single socket and event-loop callback
chain on each side."""

CHECK = "/grpc.health.v1.Health/Check"

BENCH_TOKENS = TokenCodec(secret="bench-" + "x" * 40, ttl=timedelta(minutes=5))
"""What the auth layer of a bench server verifies tokens with (its calls carry none)."""

ERRORS_AND_AUTH = ServerLayers(
    propagated=False, telemetry=False, access_log=False, deadlines=None, backpressure=None
)
"""Only the layers that always run: the chain before propagation, observability,
deadlines and backpressure came, and the baseline each of them is measured against."""

_STARTUP_TIMEOUT_SECONDS = 120.0
"""The first start of an embedded PostgreSQL runs initdb, which takes a while."""
_STOP_TIMEOUT_SECONDS = 30.0
_NOVA = "from services.cli.main import main; main(prog_name='nova')"

S = TypeVar("S")


class BenchError(Exception):
    """The benchmark could not run (a server did not start, or died); the message says why."""


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """services.cli.common.run, with a bench's and the seed's failures as one-line errors."""
    try:
        common.run(coroutine)
    except (BenchError, SeedError) as error:
        raise click.ClickException(str(error)) from None


def quiet_unless_configured() -> None:
    """Unconfigured structlog writes every level; a benchmark shows warnings and state
    changes, not each channel renewal (the bench group's logging setup, if any, wins)."""
    if not structlog.is_configured():
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))


# Server processes


@dataclass(frozen=True)
class ServerProcess:
    """A server running in a process of its own."""

    pid: int
    addresses: Mapping[str, str]
    """Where it serves, by service name."""
    log_path: Path | None = None
    """Its stdout and stderr, shown when it dies; None: they go to this process's."""
    data_dir: Path | None = None
    """The NOVA_DATA_DIR of a `nova up` (its embedded PostgreSQL and Redis are there)."""
    control: Connection | None = None
    """The pipe to a `server_process`'s target, for a bench that asks its server for
    counters after the port."""

    @property
    def address(self) -> str:
        """Where it serves, when it serves one server."""
        (address,) = self.addresses.values()
        return address

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far, all threads."""
        times = self._process().cpu_times()
        return float(times.user + times.system)

    def rss_bytes(self) -> int:
        return int(self._process().memory_info().rss)

    def _process(self) -> psutil.Process:
        try:
            return psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            raise BenchError(f"the server exited during the benchmark; {self.output()}") from None

    def output(self) -> str:
        """Where to find what it wrote, or the end of it, for an error message."""
        if self.log_path is None:
            return "its error, if any, is above"
        return f"its output:\n{_tail(self.log_path)}"


@asynccontextmanager
async def nova_up(
    services: Sequence[str], env: Mapping[str, str] | None = None
) -> AsyncIterator[ServerProcess]:
    """`nova up` in a subprocess on free ports, until `services` report SERVING; SIGTERM
    after.

    NOVA_DATABASE_URL, NOVA_REDIS_URL and the rest pass through from this environment
    (without them the server starts an embedded PostgreSQL and Redis), overridden by `env`
    (a bench's own database, Redis and settings). NOVA_DATA_DIR is a temporary folder of
    its own unless `env` names one: in the default .nova it would join the embedded
    PostgreSQL and Redis of a `./dev up` running there (and its development key), and
    seed into them. Its output goes to a log file, shown if it fails.
    """
    missing = [name for name in services if name not in REGISTRY.services]
    if missing:
        raise BenchError(f"this build has no {', '.join(missing)} service to benchmark")
    ports = {name: free_port() for name in REGISTRY.services}
    environment = {
        key: value
        for key, value in os.environ.items()
        if not (key.startswith("NOVA_") and key.endswith("_ADDRESS"))
    }
    environment.pop("NOVA_DATA_DIR", None)
    environment.update(env or {})
    environment.update({f"NOVA_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    # The gateway `nova up` also runs is not measured; it must not need port 8080.
    environment.update(NOVA_BIND_HOST="127.0.0.1", NOVA_GATEWAY_PORT="0")
    addresses = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    with tempfile.TemporaryDirectory(prefix="nova-bench-") as folder:
        data_dir = _data_dir(environment, Path(folder))
        log_path = Path(folder) / "server.log"
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _NOVA, "up", stdout=log, stderr=log, env=environment
            )
        try:
            server = ServerProcess(process.pid, addresses, log_path, data_dir)
            await _wait_until_serving(process, server, services)
            yield server
        finally:
            await _stop(process)


def _data_dir(environment: dict[str, str], folder: Path) -> Path:
    """NOVA_DATA_DIR as `nova up` will resolve it, folder/data unless one is set."""
    environment.setdefault("NOVA_DATA_DIR", str(folder / "data"))
    return Path(environment["NOVA_DATA_DIR"]).absolute()


async def _wait_until_serving(
    process: asyncio.subprocess.Process, server: ServerProcess, services: Sequence[str]
) -> None:
    deadline = time.monotonic() + _STARTUP_TIMEOUT_SECONDS
    for name in services:
        async with aio.insecure_channel(server.addresses[name]) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=REGISTRY.services[name].full_name)
            while True:
                if process.returncode is not None:
                    raise BenchError(
                        f"the server exited with code {process.returncode} before serving; "
                        f"{server.output()}"
                    )
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"the {name} service was not SERVING after {_STARTUP_TIMEOUT_SECONDS:g} "
                        f"s; {server.output()}"
                    )
                try:
                    reply = await stub.Check(request, timeout=1.0)
                except aio.AioRpcError:
                    await asyncio.sleep(0.2)
                    continue
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
                await asyncio.sleep(0.2)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), _STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@asynccontextmanager
async def server_process(
    target: Callable[[S, Connection], None], settings: S
) -> AsyncIterator[ServerProcess]:
    """Runs target(settings, connection) in a new process (spawned, so nothing of this
    event loop is inherited); target serves on a free port, sends it, and serves until
    SIGTERM (see `serve_until_terminated`). Its output goes to this process's stderr."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=target, args=(settings, theirs), daemon=True)
    process.start()
    theirs.close()
    try:
        try:
            if not await asyncio.to_thread(ours.poll, _STARTUP_TIMEOUT_SECONDS):
                raise EOFError
            port = ours.recv()
        except EOFError:
            raise BenchError(
                f"the bench server did not start within {_STARTUP_TIMEOUT_SECONDS:g} s "
                f"(its error, if any, is above)"
            ) from None
        assert process.pid is not None
        yield ServerProcess(process.pid, {"server": f"127.0.0.1:{port}"}, control=ours)
    finally:
        process.terminate()
        await asyncio.to_thread(process.join, _STOP_TIMEOUT_SECONDS)
        if process.is_alive():
            process.kill()
        ours.close()


def serve_until_terminated(
    ready: Callable[[int], None],
    serving: Callable[[], AbstractAsyncContextManager[int]],
    log_flush_seconds: float | None = None,
) -> None:
    """The body of a bench server process: `serving` starts a server and yields its port
    (`ready` tells the parent, e.g. Connection.send) until SIGTERM. The process writes
    its JSON log lines to a file, as `nova up` would to stderr (an unnamed one, gone with
    the process), written together every `log_flush_seconds` (logs.FLUSH_SECONDS), and has
    the OpenTelemetry SDK and a scrape endpoint installed."""

    async def main() -> None:
        stopped = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
        with (
            tempfile.TemporaryFile("wb") as log,
            process_telemetry("nova-bench", metrics_host="127.0.0.1", metrics_port=0),
        ):
            configure_logging("INFO", log, log_flush_seconds)
            try:
                async with serving() as port:
                    freeze_startup_heap()  # as start_server does
                    ready(port)
                    await stopped.wait()
            finally:
                flush_logs()  # lines still waiting for the buffer's timer, before log closes

    uvloop.run(main())


# Servers


def bench_server(layers: ServerLayers | None) -> aio.Server:
    """A server running `layers` as `nova up` builds them (chained_server), or no
    interceptors at all for None."""
    return aio.server() if layers is None else chained_server(BENCH_TOKENS, layers)


@asynccontextmanager
async def serving_health(server: aio.Server, address: str = "127.0.0.1:0") -> AsyncIterator[int]:
    """`server` answering grpc.health.v1.Health/Check with grpc's own health servicer (the
    protocol every Nova server answers, with services.runtime.health) at `address`, until
    the block ends; yields the port."""
    servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port(address)
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        yield port
    finally:
        await server.stop(0)


Check = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]


async def serving(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
    """A Check that answers SERVING at once."""
    return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


class HealthServer:
    """A Health server in this process on 127.0.0.1 whose Check does what `check` does
    (stall, count, record the peer); it can stop and start again on the same port, which
    grpc's own health servicer (`serving_health`) has no hook for."""

    def __init__(self, check: Check = serving) -> None:
        self.port = 0
        self._check = check
        self._server: aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = aio.server()
        handler = grpc.unary_unary_rpc_method_handler(
            self._check,
            request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": handler}),)
        )
        self.port = server.add_insecure_port(self.address)
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None


@asynccontextmanager
async def open_channels(address: str, count: int = CHANNELS) -> AsyncIterator[list[aio.Channel]]:
    """`count` connections to one server, connected before the first call (so even a run
    without warm-up measures no connection set-up)."""
    # A local subchannel pool each: otherwise channels to one target share one connection.
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with AsyncExitStack() as stack:
        channels = [
            await stack.enter_async_context(aio.insecure_channel(address, options=options))
            for _ in range(count)
        ]
        await asyncio.gather(*(channel.channel_ready() for channel in channels))
        yield channels


# Tables

LOAD_COLUMNS = ("offered/s", "achieved/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms")
"""The columns of `load_cells`, right-justified."""


def load_cells(result: LoadResult) -> list[str]:
    """One open-loop run as the cells of LOAD_COLUMNS; no latency when no call succeeded."""
    latencies = (result.p50_ms, result.p90_ms, result.p99_ms, result.p999_ms)
    return [
        f"{result.offered_rate:g}",
        f"{result.achieved_rate:.0f}",
        *(f"{ms:.2f}" if result.succeeded else "-" for ms in latencies),
    ]


def error_counts(errors: Mapping[str, int], separator: str = ", ") -> str:
    """Errors by status code name, or "0"."""
    return separator.join(f"{code} {count}" for code, count in errors.items()) or "0"


def console() -> Console:
    """Rich assumes 80 columns when output is not a terminal, which folds a table into
    ellipses in logs and CI; there a table gets the width it needs."""
    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=320)
