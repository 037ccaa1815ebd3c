"""`./dev bench rotation`: channels renewed every second under steady load, against none.

A Health server runs in this process and records the connection (peer address) each call
came on. The same open-loop load (loadgen) runs through a full client twice: with
channels kept for an hour, then retired after about a second each (jittered) while the
load goes on. Every renewal opens a connection before the old one drains, so the second
row must show no failed call, tail latency close to the first row's, and as many new
connections as renewals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.table import Table

from interceptors.client.channel_pool import PoolSettings
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
class Row:
    name: str
    result: LoadResult
    renewed: int
    connections: int


async def bench_rotation(load: Load, channels: int, max_age_seconds: float) -> Table:
    rows = [
        await _run(
            "channels kept (max age 1 h)",
            load,
            PoolSettings(channels=channels, max_age_seconds=3600),
        ),
        await _run(
            f"channels renewed (max age {max_age_seconds:g} s)",
            load,
            PoolSettings(channels=channels, max_age_seconds=max_age_seconds),
        ),
    ]
    return _table(rows, load, channels)


async def _run(name: str, load: Load, pool: PoolSettings) -> Row:
    peers: set[str] = set()

    async def check(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        peers.add(context.peer())
        return await serving(request, context)

    server = HealthServer(check)
    await server.start()
    client = connect(
        "health", [server.address], idempotent={CHECK}, settings=ClientSettings(pool=pool)
    )
    stub = client.stub(health_pb2_grpc.HealthStub)
    request = health_pb2.HealthCheckRequest()

    async def call() -> None:
        await stub.Check(request, timeout=1)

    try:
        result = await generate(call, load)
    finally:
        await client.close()
        await server.stop()
    return Row(name, result, sum(client.pool.renewed.values()), len(peers))


def _table(rows: list[Row], load: Load, channels: int) -> Table:
    table = Table(
        title=(
            f"bench rotation: Health/Check at {load.rate:g}/s for {load.duration:g} s "
            f"after {load.warmup:g} s warm-up, {channels} channels"
        ),
        title_justify="left",
    )
    table.add_column("client", no_wrap=True)
    for heading in (*LOAD_COLUMNS, "errors", "channels renewed", "connections used"):
        table.add_column(heading, justify="right")
    for row in rows:
        table.add_row(
            row.name,
            *load_cells(row.result),
            error_counts(row.result.errors),
            str(row.renewed),
            str(row.connections),
        )
    return table


@click.command(name="rotation")
@click.option("--rate", type=click.FloatRange(min=1), default=500, show_default=True)
@click.option("--duration", type=click.FloatRange(min=0.1), default=30, show_default=True)
@click.option("--warmup", type=click.FloatRange(min=0), default=2, show_default=True)
@click.option("--channels", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--max-age", type=click.FloatRange(min=0.05), default=1, show_default=True)
def command(rate: float, duration: float, warmup: float, channels: int, max_age: float) -> None:
    """Channels renewed every second under steady load: failed calls (none) and latency."""
    quiet_unless_configured()
    load = Load(rate=rate, duration=duration, warmup=warmup, max_outstanding=1000)

    async def main() -> None:
        console().print(await bench_rotation(load, channels, max_age))

    run(main())
