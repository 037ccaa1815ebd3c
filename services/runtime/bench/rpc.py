"""`nova bench rpc`: raw gRPC latency of the user and content services at one fixed rate.

The server runs in its own process (`nova up` on free ports), as it would in production,
so the client's CPU is not charged to it and its RSS can be read on its own. Every RPC is
driven at the same offered rate in one run, Health/Check first: it does no I/O, so it is
the ceiling a Python gRPC server reaches on this machine, and the gap between it and the
other rows is what the services themselves cost. Calls are made as signed-in demo users,
so the auth interceptor and viewer-dependent fields are part of that cost.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from nova.content.v1 import content_pb2, content_pb2_grpc
from nova.user.v1 import user_pb2, user_pb2_grpc
from services.runtime.bench.loadgen import Call, Load, LoadResult, generate
from services.runtime.config import SERVICE_NAMES
from services.runtime.registry import SERVICES
from services.runtime.seed import Seeded, SeedPlan, seed

CHANNELS_PER_SERVICE = 4
"""Calls rotate over this many connections per service, as a client pool would; one
HTTP/2 connection would serialise everything through a single socket and event-loop
callback chain on each side."""

BATCH_SIZE = 20

_STARTUP_TIMEOUT_SECONDS = 120.0
"""First start of an embedded PostgreSQL runs initdb, which takes a while."""
_STOP_TIMEOUT_SECONDS = 30.0
_NEEDED_SERVICES = ("user", "content")
_NOVA_UP = "from services.runtime.cli import main; main(prog_name='nova')"

T = TypeVar("T")


@dataclass(frozen=True)
class RpcBench:
    load: Load
    """Applied to each RPC in turn."""
    users: int
    """Demo users to seed; posts and the rest scale with them."""


@dataclass(frozen=True)
class Scenario:
    name: str
    call: Call


@dataclass(frozen=True)
class Row:
    name: str
    result: LoadResult
    server_rss_bytes: int


@dataclass(frozen=True)
class ServerProcess:
    pid: int
    addresses: Mapping[str, str]
    log_path: Path
    """Its stdout and stderr, shown when it dies."""


class BenchError(Exception):
    """The benchmark could not run (the server did not start); the message says why."""


async def bench_rpc(options: RpcBench) -> None:
    """Starts a server, seeds it, measures every scenario and prints the table."""
    missing = [name for name in _NEEDED_SERVICES if name not in SERVICES]
    if missing:
        raise BenchError(f"this build has no {', '.join(missing)} service to benchmark")
    console = _console()
    load = options.load
    async with running_server() as server:
        with Progress(console=console) as progress:
            seeded = await seed(
                server.addresses,
                SeedPlan(
                    users=options.users,
                    posts_per_user=2,
                    follows_per_user=5,
                    comments_per_post=1,
                    likes_per_post=2,
                ),
                progress=progress,
            )
        rows = []
        async with _channels(server.addresses) as channels:
            for scenario in scenarios(channels, seeded):
                console.print(
                    f"bench: {scenario.name} at {load.rate:g}/s "
                    f"({load.warmup:g} s warm-up, {load.duration:g} s measured)"
                )
                result = await generate(scenario.call, load)
                rows.append(Row(scenario.name, result, server_rss_bytes=_rss(server)))
        console.print(table(rows, options))


def scenarios(channels: Mapping[str, Sequence[aio.Channel]], seeded: Seeded) -> list[Scenario]:
    """The RPCs measured, each rotating over channels, callers and the seeded ids."""
    health = _rotate([health_pb2_grpc.HealthStub(c) for c in channels["user"]])
    users = _rotate([user_pb2_grpc.UserServiceStub(c) for c in channels["user"]])
    content = _rotate([content_pb2_grpc.ContentServiceStub(c) for c in channels["content"]])
    caller = _rotate(seeded.users)
    user_ids = _rotate([user.id for user in seeded.users])
    post_ids = _rotate(seeded.post_ids)

    def batch(ids: Callable[[], str]) -> list[str]:
        return [ids() for _ in range(BATCH_SIZE)]

    async def health_check() -> None:
        await health().Check(health_pb2.HealthCheckRequest())

    async def get_user() -> None:
        await users().GetUser(user_pb2.GetUserRequest(id=user_ids()), metadata=caller().metadata)

    async def batch_get_users() -> None:
        request = user_pb2.BatchGetUsersRequest(ids=batch(user_ids))
        await users().BatchGetUsers(request, metadata=caller().metadata)

    async def batch_get_posts() -> None:
        request = content_pb2.BatchGetPostsRequest(ids=batch(post_ids))
        await content().BatchGetPosts(request, metadata=caller().metadata)

    return [
        Scenario("Health/Check", health_check),
        Scenario("UserService/GetUser", get_user),
        Scenario(f"UserService/BatchGetUsers ({BATCH_SIZE} ids)", batch_get_users),
        Scenario(f"ContentService/BatchGetPosts ({BATCH_SIZE} ids)", batch_get_posts),
    ]


def table(rows: Sequence[Row], options: RpcBench) -> Table:
    load = options.load
    result = Table(
        title=(
            f"nova bench rpc: {load.duration:g} s per rpc after {load.warmup:g} s warm-up, "
            f"{options.users} users, max {load.max_outstanding} outstanding"
        ),
        title_justify="left",
    )
    result.add_column("rpc", no_wrap=True)
    for heading in ("offered/s", "achieved/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms"):
        result.add_column(heading, justify="right")
    result.add_column("errors")
    result.add_column("server RSS MiB", justify="right")
    for row in rows:
        measured = row.result
        latencies = (measured.p50_ms, measured.p90_ms, measured.p99_ms, measured.p999_ms)
        errors = ", ".join(f"{code} {count}" for code, count in measured.errors.items())
        result.add_row(
            row.name,
            f"{measured.offered_rate:g}",
            f"{measured.achieved_rate:.0f}",
            *(f"{ms:.2f}" if measured.succeeded else "-" for ms in latencies),
            errors or "0",
            f"{row.server_rss_bytes / 2**20:.0f}",
        )
    return result


@asynccontextmanager
async def running_server() -> AsyncIterator[ServerProcess]:
    """`nova up` in a subprocess on free ports, until it reports SERVING; SIGTERM after.

    NOVA_DATABASE_URL, NOVA_DATA_DIR and the rest pass through from this environment
    (no NOVA_DATABASE_URL: the server starts an embedded PostgreSQL). Its output goes to
    a log file, shown if it fails to start.
    """
    ports = {name: _free_port() for name in SERVICE_NAMES}
    env = {
        key: value
        for key, value in os.environ.items()
        if not (key.startswith("NOVA_") and key.endswith("_ADDRESS"))
    }
    env["NOVA_BIND_HOST"] = "127.0.0.1"
    env.update({f"NOVA_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    addresses = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    with tempfile.TemporaryDirectory(prefix="nova-bench-") as folder:
        log_path = Path(folder) / "server.log"
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _NOVA_UP, "up", stdout=log, stderr=log, env=env
            )
        try:
            await _wait_until_serving(process, addresses, log_path)
            yield ServerProcess(pid=process.pid, addresses=addresses, log_path=log_path)
        finally:
            await _stop(process)


async def _wait_until_serving(
    process: asyncio.subprocess.Process, addresses: Mapping[str, str], log_path: Path
) -> None:
    deadline = time.monotonic() + _STARTUP_TIMEOUT_SECONDS
    for name in _NEEDED_SERVICES:
        async with aio.insecure_channel(addresses[name]) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=SERVICES[name].full_name)
            while True:
                if process.returncode is not None:
                    raise BenchError(
                        f"the server exited with code {process.returncode} before serving; "
                        f"its output:\n{_tail(log_path)}"
                    )
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"the {name} service was not SERVING after {_STARTUP_TIMEOUT_SECONDS:g} s; "
                        f"server output:\n{_tail(log_path)}"
                    )
                try:
                    reply = await stub.Check(request, timeout=1.0)
                except aio.AioRpcError:
                    await asyncio.sleep(0.2)
                    continue
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
                await asyncio.sleep(0.2)


def _rss(server: ServerProcess) -> int:
    try:
        return int(psutil.Process(server.pid).memory_info().rss)
    except psutil.NoSuchProcess:
        raise BenchError(
            f"the server exited during the benchmark; its output:\n{_tail(server.log_path)}"
        ) from None


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), _STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()


@asynccontextmanager
async def _channels(addresses: Mapping[str, str]) -> AsyncIterator[dict[str, list[aio.Channel]]]:
    # A local subchannel pool per channel: otherwise channels to one target share one
    # connection, and spreading calls over them would change nothing.
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with AsyncExitStack() as stack:
        opened = {
            name: [
                await stack.enter_async_context(
                    aio.insecure_channel(addresses[name], options=options)
                )
                for _ in range(CHANNELS_PER_SERVICE)
            ]
            for name in _NEEDED_SERVICES
        }
        # Connected before the first measured call, even with no warm-up.
        await asyncio.gather(*(c.channel_ready() for group in opened.values() for c in group))
        yield opened


def _console() -> Console:
    """Rich assumes 80 columns when output is not a terminal, which folds the table into
    ellipses in logs and CI; there the table gets the width it needs."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def _rotate(items: Sequence[T]) -> Callable[[], T]:
    cycle = itertools.cycle(items)
    return lambda: next(cycle)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
