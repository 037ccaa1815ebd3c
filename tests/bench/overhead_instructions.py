"""CPU instructions per call of the server chain, layer by layer, counted by callgrind.

CPU time on a shared 2-core VM moves ±5-10 points from run to run, more than one layer
costs; instruction counts do not. Each variant's Health server runs under
`valgrind --tool=callgrind` with counting off; after 400 unmeasured calls counting is
switched on for `--calls` calls from 8 concurrent callers, and the total is divided by
them. User-space instructions only: system calls (the log's writes) do not show. Run the
variants one after another: a second valgrind on the same cores changes how many calls
each event-loop turn serves, and with it the count.

    .venv/bin/python -m tests.bench.overhead_instructions [--calls N] [--rpc R] [variant ...]

`--rpc getuser` serves UserService/GetUser instead (one indexed row from PostgreSQL:
NOVA_DATABASE_URL, created as a database of its own, dropped after), so the chain's share of
a call that does real work shows too. Each line also gives the server's CPU time per call
natively (no valgrind), from the kernel's accounting.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import psutil
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from interceptors.chain_interceptor import ChainInterceptor
from interceptors.compiled import SETTING, in_use
from nova.user.v1 import user_pb2, user_pb2_grpc
from services.runtime.auth import TokenCodec
from services.runtime.bench.overhead import VARIANTS, serve_until_terminated, serving_health
from services.runtime.db import open_database
from services.runtime.errors import NotFound
from services.runtime.ids import DEFAULT_TENANT_ID, new_id
from services.runtime.logs import FLUSH_SECONDS
from services.runtime.migrations import migrate
from services.runtime.server import build_chain, chained_server
from services.runtime.server_chain import ServerChain
from services.user.passwords import Passwords
from services.user.repository import UserRepository
from services.user.service import SPEC as USER
from services.user.servicer import UserServicer

INTERCEPTED = "full, as aio interceptor"
"""The full chain in grpc.aio's interceptor pipeline instead of in front of the handlers."""
INTERPRETED = "full, interpreted"
"""The full chain as plain Python, where the others run compiled (interceptors.compiled)."""
_BARE = VARIANTS["error mapping + auth"]
assert _BARE is not None
_FULL = ServerChain()
CHAINS: dict[str, ServerChain | None] = {
    "none": None,
    "passthrough": None,  # a grpc.aio interceptor that only calls on
    "error mapping + auth": _BARE,
    "+ request context": replace(_BARE, request_context=True),
    "+ telemetry": replace(_BARE, telemetry=True),
    "+ access log": replace(_BARE, access_log=True),
    "+ deadlines": replace(_BARE, deadlines=_FULL.deadlines),
    "+ backpressure": replace(_BARE, backpressure=_FULL.backpressure),
    "full chain": _FULL,
    INTERCEPTED: _FULL,
    INTERPRETED: _FULL,
}
_WARMUP_CALLS = 400
_CONCURRENCY = 8
_SLOWED_FLUSH_SECONDS = 0.25
"""The servers' log flush interval under callgrind, which runs them ~25x slower than
natively (measured here: 180 calls/s against 4,700): at logs.FLUSH_SECONDS (10 ms) each
flush would write 1-2 lines, where natively at the same load it writes ~45, and its fixed
cost (a timer, a join, a write) would be charged to one call instead of to dozens. The
output shows calls per flush both ways, to check they match."""

if TYPE_CHECKING:
    # grpc-stubs makes it generic; grpcio's runtime class is not subscriptable.
    _Interceptor = aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = aio.ServerInterceptor


class _Passthrough(_Interceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        return await continuation(details)


def _serve(variant: str, port: int, log_flush_seconds: float, dsn: str | None) -> None:
    @asynccontextmanager
    async def serving() -> AsyncIterator[int]:
        tokens = TokenCodec(secret="bench-" + "x" * 40, ttl=timedelta(minutes=5))
        chain = CHAINS[variant]
        server: aio.Server
        if variant == "passthrough":
            server = aio.server(interceptors=[_Passthrough()])
        elif variant == INTERCEPTED:
            server = aio.server(interceptors=[ChainInterceptor(build_chain(tokens, _FULL))])
        elif chain is not None:
            server = chained_server(tokens, chain)
        else:
            server = aio.server()
        if dsn is None:
            async with serving_health(server, f"127.0.0.1:{port}"):
                yield port
            return
        async with open_database(dsn, size=4, acquire_timeout_ms=1000) as db:
            async with db.connection() as conn:
                await migrate(conn, schema=USER.schema, directory=USER.migrations)
            repository = UserRepository(db)
            if await _user_exists(repository) is None:
                await repository.create_user(
                    tenant_id=DEFAULT_TENANT_ID,
                    user_id=new_id(),
                    handle=_HANDLE,
                    email=f"{_HANDLE}@example.com",
                    password_hash="not-a-hash",
                    display_name=_HANDLE,
                )
            servicer = UserServicer(repository, Passwords("insecure-fast"), tokens)
            user_pb2_grpc.add_UserServiceServicer_to_server(servicer, server)
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
            try:
                yield port
            finally:
                await server.stop(0)

    serve_until_terminated(lambda _: print("ready", flush=True), serving, log_flush_seconds)


_HANDLE = "bench_getuser"


async def _user_exists(repository: UserRepository) -> object:
    try:
        return await repository.get_user(
            tenant_id=DEFAULT_TENANT_ID, viewer_id=None, handle=_HANDLE
        )
    except NotFound:
        return None


async def _call(port: int, calls: int, rpc: str = "health") -> None:
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health_stub = health_pb2_grpc.HealthStub(channel)
        user_stub = user_pb2_grpc.UserServiceStub(channel)
        check = health_pb2.HealthCheckRequest()
        get_user = user_pb2.GetUserRequest(handle=_HANDLE)

        async def caller(count: int) -> None:
            for _ in range(count):
                if rpc == "health":
                    await health_stub.Check(check, timeout=60)
                else:
                    await user_stub.GetUser(get_user, timeout=60)

        await asyncio.gather(*(caller(calls // _CONCURRENCY) for _ in range(_CONCURRENCY)))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Measured:
    thousands: float
    """Thousands of instructions per call."""
    rate: float
    """Calls per second while they were counted, under callgrind."""


def _server_env(variant: str) -> dict[str, str]:
    return {**os.environ, SETTING: "0"} if variant == INTERPRETED else dict(os.environ)


@dataclass(frozen=True)
class Target:
    """The RPC measured: Health/Check, or GetUser against the database at `dsn`."""

    rpc: str
    dsn: str | None = None


def _server_command(variant: str, port: int, flush_seconds: float, target: Target) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.bench.overhead_instructions",
        "--serve",
        variant,
        "--port",
        str(port),
        "--log-flush-seconds",
        str(flush_seconds),
        *(["--dsn", target.dsn] if target.dsn else []),
    ]


def _rate(port: int, calls: int, target: Target) -> float:
    started = time.perf_counter()
    asyncio.run(_call(port, calls, target.rpc))
    return calls / (time.perf_counter() - started)


def native_rate(variant: str, calls: int, target: Target) -> tuple[float, float]:
    """Calls per second of `variant`'s server with this client, without valgrind, and the
    server's CPU time per call (µs, user + system)."""
    port = _free_port()
    command = _server_command(variant, port, FLUSH_SECONDS, target)
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=_server_env(variant))
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise SystemExit(f"the {variant!r} server did not start")
        asyncio.run(_call(port, _WARMUP_CALLS, target.rpc))
        process = psutil.Process(server.pid)
        before = process.cpu_times()
        rate = _rate(port, calls * 5, target)
        after = process.cpu_times()
        cpu = (after.user + after.system) - (before.user + before.system)
        return rate, cpu / (calls * 5) * 1e6
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)


def measure(
    variant: str, calls: int, workdir: Path, flush_seconds: float, target: Target
) -> Measured:
    """What `variant`'s server runs per call, under callgrind."""
    port = _free_port()
    out = workdir / f"callgrind.{abs(hash(variant))}"
    server = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            *_server_command(variant, port, flush_seconds, target),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_server_env(variant),
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise SystemExit(f"the {variant!r} server did not start under valgrind")
        asyncio.run(_call(port, _WARMUP_CALLS, target.rpc))
        control = ["callgrind_control"]
        subprocess.run([*control, "-i", "on", str(server.pid)], check=True, capture_output=True)
        rate = _rate(port, calls, target)
        subprocess.run([*control, "-i", "off", str(server.pid)], check=True, capture_output=True)
        subprocess.run([*control, "-d", str(server.pid)], check=True, capture_output=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    total = 0
    for dump in workdir.glob(f"{out.name}.*"):
        report = subprocess.run(
            ["callgrind_annotate", str(dump)], check=True, capture_output=True, text=True
        ).stdout
        found = re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", report)
        if found:
            total += int(found.group(1).replace(",", ""))
    return Measured(total / calls / 1000, rate)


async def _create_database(url: str, name: str) -> str:
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _drop_database(url: str, name: str) -> None:
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", choices=[*CHAINS, []], help="all when none")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rpc", choices=["health", "getuser"], default="health")
    parser.add_argument(
        "--log-flush-seconds",
        type=float,
        default=_SLOWED_FLUSH_SECONDS,
        help=f"the servers' log flush interval under callgrind (default {_SLOWED_FLUSH_SECONDS})",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.port, args.log_flush_seconds, args.dsn)
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("this benchmark needs valgrind (apt install valgrind)")
    target = Target(args.rpc)
    database = f"nova_bench_{os.getpid()}"
    url = os.environ.get("NOVA_DATABASE_URL")
    if args.rpc == "getuser":
        if not url:
            raise SystemExit("--rpc getuser needs NOVA_DATABASE_URL (a PostgreSQL to use)")
        target = Target(args.rpc, asyncio.run(_create_database(url, database)))
    flush = args.log_flush_seconds
    how = "compiled (mypyc)" if in_use() else "plain Python: no build of the current source"
    print(f"the interceptors run {how}, except in {INTERPRETED!r}; rpc: {args.rpc}")
    try:
        with tempfile.TemporaryDirectory() as workdir:
            base: float | None = None
            for variant in args.variants or list(CHAINS):
                counted = measure(variant, args.calls, Path(workdir), flush, target)
                native, cpu_us = native_rate(variant, args.calls, target)
                base = counted.thousands if base is None else base
                print(
                    f"{variant:24s} {counted.thousands:7.1f}k instructions per call  "
                    f"{counted.thousands / base:5.2f}x   {cpu_us:6.1f} µs CPU per call natively   "
                    f"calls per log flush: "
                    f"{counted.rate * flush:4.0f} here ({counted.rate:4.0f}/s, every {flush:g} s), "
                    f"{native * FLUSH_SECONDS:4.0f} natively ({native:4.0f}/s, "
                    f"every {FLUSH_SECONDS:g} s)"
                )
    finally:
        if target.dsn and url:
            asyncio.run(_drop_database(url, database))


if __name__ == "__main__":
    main()
