"""CPU instructions per call of the server chain, layer by layer, counted by callgrind.

CPU time on a shared 2-core VM moves ±5-10 points from run to run, more than one layer
costs; instruction counts do not. Each variant's Health server runs under
`valgrind --tool=callgrind` with counting off; after 400 unmeasured calls counting is
switched on for `--calls` calls from 8 concurrent callers, and the total is divided by
them. User-space instructions only: system calls (the log's writes) do not show. Run the
variants one after another: a second valgrind on the same cores changes how many calls
each event-loop turn serves, and with it the count.

    ./dev bench overhead-instructions [--calls N] [--rpc health|getuser] [variant ...]
    .venv/bin/python -m tests.bench.overhead_instructions [...]   (the same)

`--rpc getuser` serves UserService/GetUser instead (one indexed row from PostgreSQL:
NOVA_DATABASE_URL, created as a database of its own, dropped after), so the chain's share of
a call that does real work shows too. Each line also gives the server's CPU time per call
natively (no valgrind), from the kernel's accounting.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import click
import psutil
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nova.user.v1 import user_pb2, user_pb2_grpc
from services.runtime.config import Config
from services.runtime.db import open_database
from services.runtime.errors import NotFound
from services.runtime.ids import DEFAULT_TENANT_ID, new_id
from services.runtime.logs import FLUSH_SECONDS
from services.runtime.process import migrate_services
from services.runtime.server_layers import ServerLayers
from services.runtime.spec import Dependencies
from services.user.repository import UserRepository
from services.user.service import SPEC as USER
from tests.bench.harness import (
    BENCH_TOKENS,
    ERRORS_AND_AUTH,
    bench_server,
    serve_until_terminated,
    serving_health,
)
from tests.brokers import free_port

_FULL = ServerLayers()
CHAINS: dict[str, ServerLayers | None] = {
    "none": None,
    "error mapping + auth": ERRORS_AND_AUTH,
    "+ propagated": replace(ERRORS_AND_AUTH, propagated=True),
    "+ telemetry": replace(ERRORS_AND_AUTH, telemetry=True),
    "+ access log": replace(ERRORS_AND_AUTH, access_log=True),
    "+ deadlines": replace(ERRORS_AND_AUTH, deadlines=_FULL.deadlines),
    "+ backpressure": replace(ERRORS_AND_AUTH, backpressure=_FULL.backpressure),
    "full chain": _FULL,
}
"""Each optional layer alone on top of the ones that always run, then all of them."""
_WARMUP_CALLS = 400
_CONCURRENCY = 8
_SLOWED_FLUSH_SECONDS = 0.25
"""The servers' log flush interval under callgrind, which runs them ~25x slower than
natively (measured here: 180 calls/s against 4,700): at logs.FLUSH_SECONDS (10 ms) each
flush would write 1-2 lines, where natively at the same load it writes ~45, and its fixed
cost (a timer, a join, a write) would be charged to one call instead of to dozens. The
output shows calls per flush both ways, to check they match."""


def _serve(variant: str, port: int, log_flush_seconds: float, dsn: str | None) -> None:
    @asynccontextmanager
    async def serving() -> AsyncIterator[int]:
        server = bench_server(CHAINS[variant])
        if dsn is None:
            async with serving_health(server, f"127.0.0.1:{port}"):
                yield port
            return
        async with open_database(dsn, size=4, acquire_timeout_ms=1000) as db:
            await migrate_services(db, [USER])
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
            # Registered as the process registers it (its SPEC), checks included.
            config = Config.from_env(
                {"NOVA_PASSWORD_HASH_PROFILE": "insecure-fast"}, default_ports={}
            )
            USER.add_to_server(server, Dependencies(config=config, db=db, tokens=BENCH_TOKENS))
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


@dataclass(frozen=True)
class Measured:
    thousands: float
    """Thousands of instructions per call."""
    rate: float
    """Calls per second while they were counted, under callgrind."""


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
    port = free_port()
    command = _server_command(variant, port, FLUSH_SECONDS, target)
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise click.ClickException(f"the {variant!r} server did not start")
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
    port = free_port()
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
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise click.ClickException(f"the {variant!r} server did not start under valgrind")
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


@click.command(name="overhead-instructions")
@click.argument("variants", nargs=-1, type=click.Choice(list(CHAINS)))
@click.option(
    "--calls",
    type=click.IntRange(min=_CONCURRENCY),
    default=1000,
    show_default=True,
    help=f"Calls counted per variant, from {_CONCURRENCY} concurrent callers.",
)
@click.option(
    "--rpc",
    type=click.Choice(["health", "getuser"]),
    default="health",
    show_default=True,
    help="Health/Check, or UserService/GetUser against NOVA_DATABASE_URL.",
)
@click.option(
    "--log-flush-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=_SLOWED_FLUSH_SECONDS,
    show_default=True,
    help="The servers' log flush interval under callgrind.",
)
@click.option("--serve", hidden=True, help="Run as the server of this variant.")
@click.option("--port", type=int, default=0, hidden=True)
@click.option("--dsn", hidden=True)
def command(
    variants: tuple[str, ...],
    calls: int,
    rpc: str,
    log_flush_seconds: float,
    serve: str | None,
    port: int,
    dsn: str | None,
) -> None:
    """CPU instructions per call of the server chain, layer by layer, under callgrind
    (needs valgrind); all variants when none is named."""
    if serve:
        _serve(serve, port, log_flush_seconds, dsn)
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise click.ClickException("this benchmark needs valgrind (apt install valgrind)")
    target = Target(rpc)
    database = f"nova_bench_{os.getpid()}"
    url = os.environ.get("NOVA_DATABASE_URL")
    if rpc == "getuser":
        if not url:
            raise click.ClickException("--rpc getuser needs NOVA_DATABASE_URL (a PostgreSQL)")
        target = Target(rpc, asyncio.run(_create_database(url, database)))
    flush = log_flush_seconds
    click.echo(f"rpc: {rpc}, {calls} calls counted per variant")
    try:
        with tempfile.TemporaryDirectory() as workdir:
            base: float | None = None
            for variant in variants or list(CHAINS):
                counted = measure(variant, calls, Path(workdir), flush, target)
                native, cpu_us = native_rate(variant, calls, target)
                base = counted.thousands if base is None else base
                click.echo(
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
    command()
