"""`./dev bench overload`: a service driven at twice its capacity, with backpressure and without.

The RPC measured is one whose capacity is known by construction: each call holds one of
the pool's `--pool` PostgreSQL connections for `--cost-ms` (`SELECT pg_sleep`) through the
real services.runtime.db pool, bounded acquire included. That is a service whose database
is its bottleneck, the usual case, with capacity = pool / cost. Real UserService.GetUser
would not do here: on a 2-core machine it is bound by the CPU that the server, PostgreSQL
and this client share, so "twice its capacity" would measure the scheduler rather than
the server's admission policy, and its capacity would move with whatever else runs.

Each mode runs the full server chain (chained_server, in its own process, as in
`./dev bench overhead`) and differs only in the backpressure layer: off, a fixed limit, and
the adaptive limit. Per mode: an unloaded run at a quarter of capacity, then the overload
at `--load` times capacity, both open loop (latency counts from each call's due time, so
queueing is not hidden), every call with a `--deadline-ms` deadline as a real client sets.
Goals with backpressure: the p99 of admitted calls within 3x its unloaded p99, refusals
answered in under 5 ms (measured from sending, so a client running late does not count
against the server), and successful calls/s near capacity rather than collapsing.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import click
import grpc
from grpc import aio
from hdrh.histogram import HdrHistogram
from rich.table import Table

from interceptors.server.backpressure import BackpressureSettings
from services.cli.common import load_config
from services.runtime.config import Config
from services.runtime.db import open_database
from services.runtime.embedded_postgres import embedded_postgres
from services.runtime.server_layers import ServerLayers
from tests.bench.harness import (
    bench_server,
    console,
    error_counts,
    open_channels,
    run,
    serve_until_terminated,
    server_process,
)
from tests.bench.loadgen import Load, LoadResult, generate

WORK = "/nova.bench.Overload/Work"
UNLOADED_SHARE = 0.25
"""The unloaded run's rate, as a share of capacity: no queue forms."""
_MAX_OUTSTANDING = 10_000
"""High enough that the client never refuses calls itself: the server must."""


@dataclass(frozen=True)
class WorkServer:
    dsn: str
    pool: int
    cost_seconds: float
    acquire_timeout_ms: int
    layers: ServerLayers


def _serve_work(settings: WorkServer, connection: Connection) -> None:
    @asynccontextmanager
    async def serving() -> AsyncIterator[int]:
        async with open_database(
            settings.dsn, size=settings.pool, acquire_timeout_ms=settings.acquire_timeout_ms
        ) as db:

            async def work(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
                async with db.connection() as conn:
                    await conn.execute("SELECT pg_sleep($1)", settings.cost_seconds)
                return b""

            server = bench_server(settings.layers)
            service, _, method = WORK.lstrip("/").partition("/")
            handlers = {method: grpc.unary_unary_rpc_method_handler(work)}
            server.add_generic_rpc_handlers(
                [grpc.method_handlers_generic_handler(service, handlers)]
            )
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            try:
                yield port
            finally:
                await server.stop(0)

    serve_until_terminated(connection.send, serving)


@dataclass(frozen=True)
class OverloadBench:
    pool: int
    cost_seconds: float
    load: float
    """Offered rate in the overload, as a multiple of capacity."""
    deadline_seconds: float
    fixed_limit: int
    duration: float
    warmup: float
    acquire_timeout_ms: int

    @property
    def cost_ms(self) -> float:
        return self.cost_seconds * 1000

    @property
    def capacity(self) -> float:
        """Calls/s the pool can serve: each call holds a connection for cost_seconds."""
        return self.pool / self.cost_seconds


@dataclass(frozen=True)
class Run:
    result: LoadResult
    refusal_p50_ms: float
    refusal_p99_ms: float
    """Latency of RESOURCE_EXHAUSTED answers, from sending; 0 when there were none."""


@dataclass(frozen=True)
class Mode:
    name: str
    unloaded: Run
    loaded: Run


async def bench_overload(options: OverloadBench, config: Config) -> None:
    """Runs every mode against its own server process and prints the table."""
    out = console()
    fixed = BackpressureSettings(max_in_flight=options.fixed_limit)
    modes = {
        "backpressure off": ServerLayers(backpressure=None),
        f"fixed limit {options.fixed_limit}": ServerLayers(backpressure=fixed),
        "adaptive limit": ServerLayers(backpressure=BackpressureSettings(limiter="adaptive")),
    }
    done = []
    async with AsyncExitStack() as stack:
        dsn = config.database_url
        if dsn is None:
            dsn = await stack.enter_async_context(embedded_postgres(config.data_dir))
        for name, layers in modes.items():
            server = WorkServer(
                dsn, options.pool, options.cost_seconds, options.acquire_timeout_ms, layers
            )
            async with (
                server_process(_serve_work, server) as process,
                open_channels(process.address) as channels,
            ):
                rpcs = itertools.cycle([c.unary_unary(WORK, None, None) for c in channels])
                runs = []
                for share in (UNLOADED_SHARE, options.load):
                    rate = share * options.capacity
                    out.print(f"bench: {name}, {rate:g} calls/s")
                    runs.append(await _run(rpcs, rate, options))
            done.append(Mode(name, *runs))
    out.print(table(done, options))


async def _run(rpcs: itertools.cycle[Any], rate: float, options: OverloadBench) -> Run:
    refusals = HdrHistogram(1, 3_600_000_000, 3)
    measuring = False

    async def call() -> None:
        started = time.perf_counter()
        try:
            await next(rpcs)(b"", timeout=options.deadline_seconds)
        except aio.AioRpcError as error:
            if measuring and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                microseconds = round((time.perf_counter() - started) * 1e6)
                refusals.record_value(max(microseconds, 1))
            raise

    if options.warmup > 0:
        await generate(call, Load(rate, options.warmup, 0, _MAX_OUTSTANDING))
    measuring = True
    result = await generate(call, Load(rate, options.duration, 0, _MAX_OUTSTANDING))
    return Run(
        result,
        refusals.get_value_at_percentile(50) / 1000,
        refusals.get_value_at_percentile(99) / 1000,
    )


def table(modes: Sequence[Mode], options: OverloadBench) -> Table:
    result = Table(
        title=(
            f"bench overload: {options.pool} connections x {options.cost_ms:g} ms = "
            f"capacity {options.capacity:g} calls/s; unloaded {UNLOADED_SHARE:g}x, "
            f"overload {options.load:g}x; {options.duration:g} s each, "
            f"deadline {options.deadline_seconds * 1000:g} ms"
        ),
        title_justify="left",
    )
    result.add_column("")
    for mode in modes:
        result.add_column(mode.name, justify="right")

    def row(label: str, cells: Sequence[str]) -> None:
        result.add_row(label, *cells)

    unloaded = [mode.unloaded for mode in modes]
    loaded = [mode.loaded for mode in modes]
    row("unloaded p99 ms", [f"{run.result.p99_ms:.1f}" for run in unloaded])
    row("overloaded p99 ms, admitted calls", [_ms(run.result.p99_ms, run) for run in loaded])
    row(
        "  ratio (goal: within 3x)",
        [
            f"{after.result.p99_ms / before.result.p99_ms:.1f}x" if after.result.succeeded else "-"
            for before, after in zip(unloaded, loaded, strict=True)
        ],
    )
    row(
        "refused (RESOURCE_EXHAUSTED) p50 ms", [_refusal(run.refusal_p50_ms, run) for run in loaded]
    )
    row("refused p99 ms (goal: under 5)", [_refusal(run.refusal_p99_ms, run) for run in loaded])
    row(
        "successful calls/s (offered)",
        [f"{run.result.achieved_rate:.0f} ({run.result.offered_rate:g})" for run in loaded],
    )
    row("errors by status", [error_counts(run.result.errors, "\n") for run in loaded])
    return result


def _ms(value: float, run: Run) -> str:
    return f"{value:.1f}" if run.result.succeeded else "-"


def _refusal(value: float, run: Run) -> str:
    refused = run.result.errors.get(grpc.StatusCode.RESOURCE_EXHAUSTED.name, 0)
    return f"{value:.2f}" if refused else "-"


@click.command(name="overload")
@click.option(
    "--pool",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="PostgreSQL connections of the server's pool.",
)
@click.option(
    "--cost-ms",
    type=click.FloatRange(min=1),
    default=20,
    show_default=True,
    help="Milliseconds each call holds a connection (pg_sleep).",
)
@click.option(
    "--load",
    type=click.FloatRange(min=1),
    default=2,
    show_default=True,
    help="Offered rate of the overload, as a multiple of capacity (pool / cost).",
)
@click.option(
    "--deadline-ms",
    type=click.FloatRange(min=1),
    default=1000,
    show_default=True,
    help="Deadline of every call.",
)
@click.option(
    "--fixed-limit",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Calls in flight at most in the fixed-limit mode.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=5,
    show_default=True,
    help="Seconds measured per run.",
)
@click.option(
    "--warmup",
    type=click.FloatRange(min=0),
    default=2,
    show_default=True,
    help="Seconds of unmeasured calls before each run (the adaptive limit learns here).",
)
def command(
    pool: int,
    cost_ms: float,
    load: float,
    deadline_ms: float,
    fixed_limit: int,
    duration: float,
    warmup: float,
) -> None:
    """A service at twice its capacity: backpressure off, a fixed limit and the adaptive
    limit side by side, each server in a subprocess (PostgreSQL: NOVA_DATABASE_URL, or
    embedded)."""
    config = load_config()
    options = OverloadBench(
        pool=pool,
        cost_seconds=cost_ms / 1000,
        load=load,
        deadline_seconds=deadline_ms / 1000,
        fixed_limit=fixed_limit,
        duration=duration,
        warmup=warmup,
        acquire_timeout_ms=config.db_acquire_timeout_ms,
    )
    run(bench_overload(options, config))
