"""`./dev bench hedging`: one of two replicas stalls now and then; the tail with and without
hedged requests, and the load the hedges added.

Two Health servers run in this process; replica B stalls a fraction of its calls (a pause,
a noisy neighbour), replica A never does. The same open-loop load (loadgen) runs twice
through a full client of both, first without hedging, then with a hedge after the observed
p95. The extra load is counted where it lands: requests the two servers received per call
made (a hedge cancelled before it reached a server costs nothing there and is not counted).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import click
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.table import Table

from interceptors.client.hedging import HedgingSettings
from interceptors.client.stack import ClientSettings, connect
from tests.bench.harness import (
    CHECK,
    LOAD_COLUMNS,
    HealthServer,
    console,
    error_counts,
    load_cells,
    quiet_unless_configured,
    run,
    serving,
)
from tests.bench.loadgen import Load, LoadResult, generate


@dataclass(frozen=True)
class Stall:
    fraction: float
    """Of replica B's calls."""
    seconds: float


@dataclass(frozen=True)
class Row:
    name: str
    result: LoadResult
    calls: int
    served: int


class Replica:
    """A Check that stalls `stall.fraction` of the calls it gets; it counts them all."""

    def __init__(self, stall: Stall, seed: int) -> None:
        self.served = 0
        self._stall = stall
        self._random = random.Random(seed)

    async def check(self, request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        self.served += 1
        if self._random.random() < self._stall.fraction:
            await asyncio.sleep(self._stall.seconds)
        return await serving(request, context)


async def bench_hedging(load: Load, stall: Stall) -> Table:
    rows = [
        await _run("without hedging", load, stall, HedgingSettings(enabled=False)),
        await _run("hedging after p95", load, stall, HedgingSettings(enabled=True)),
    ]
    return _table(rows, load, stall)


async def _run(name: str, load: Load, stall: Stall, hedging: HedgingSettings) -> Row:
    fast, slow = Replica(Stall(0, 0), seed=1), Replica(stall, seed=2)
    servers = [HealthServer(fast.check), HealthServer(slow.check)]
    for server in servers:
        await server.start()
    client = connect(
        "health",
        [server.address for server in servers],
        idempotent={CHECK},
        settings=ClientSettings(hedging=hedging),
    )
    stub = client.stub(health_pb2_grpc.HealthStub)
    request = health_pb2.HealthCheckRequest()
    calls = 0

    async def check() -> None:
        nonlocal calls
        calls += 1
        await stub.Check(request, timeout=1)

    try:
        result = await generate(check, load)
    finally:
        await client.close()
        for server in servers:
            await server.stop()
    return Row(name, result, calls, fast.served + slow.served)


def _table(rows: list[Row], load: Load, stall: Stall) -> Table:
    table = Table(
        title=(
            f"bench hedging: Health/Check at {load.rate:g}/s for {load.duration:g} s "
            f"after {load.warmup:g} s warm-up, over replicas A and B; B stalls "
            f"{stall.fraction:.0%} of its calls by {stall.seconds * 1000:g} ms"
        ),
        title_justify="left",
    )
    table.add_column("client", no_wrap=True)
    for heading in (*LOAD_COLUMNS, "errors", "server requests per call", "extra load"):
        table.add_column(heading, justify="right")
    for row in rows:
        table.add_row(
            row.name,
            *load_cells(row.result),
            error_counts(row.result.errors),
            f"{row.served / row.calls:.3f}",
            f"{(row.served / row.calls - 1):+.1%}",
        )
    return table


@click.command(name="hedging")
@click.option("--rate", type=click.FloatRange(min=1), default=500, show_default=True)
@click.option("--duration", type=click.FloatRange(min=0.1), default=10, show_default=True)
@click.option("--warmup", type=click.FloatRange(min=0), default=2, show_default=True)
@click.option(
    "--stall-fraction",
    type=click.FloatRange(min=0, max=1),
    default=0.06,
    show_default=True,
    help="Share of replica B's calls that stall.",
)
@click.option("--stall-ms", type=click.FloatRange(min=0), default=50, show_default=True)
def command(
    rate: float, duration: float, warmup: float, stall_fraction: float, stall_ms: float
) -> None:
    """One of two replicas stalls now and then: p99 with and without hedging."""
    quiet_unless_configured()
    load = Load(rate=rate, duration=duration, warmup=warmup, max_outstanding=1000)

    async def main() -> None:
        console().print(await bench_hedging(load, Stall(stall_fraction, stall_ms / 1000)))

    run(main())
