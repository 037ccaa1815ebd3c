"""`./dev bench breaker`: a dependency dies and comes back; what callers see, and what the
breaker's admit decision costs.

A Health server runs in this process and is called at a fixed rate (loadgen, open loop)
through a full client (`interceptors.client.stack`). Then it is stopped: the table shows
how many calls it took to open the breaker, how fast calls fail while it is open (and that
none of them reaches the network, from the client's own attempt counter), then, once the
server is back on the same port, how long the breaker took to close. Each phase also shows
its slowest call against the calls' deadline: none may hang past it. A second table times
the breaker's decisions in a tight loop, without any I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import click
import grpc
import pybreaker
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from rich.table import Table

from interceptors.client.breaker import Breaker, BreakerSettings, CircuitOpen
from interceptors.client.call import OutgoingCall
from interceptors.client.channel_pool import PoolSettings
from interceptors.client.stack import ClientSettings, connect
from tests.bench.harness import CHECK, HealthServer, console, quiet_unless_configured, run
from tests.bench.loadgen import Load, generate

TIMEOUT_SECONDS = 1.0
_LOOPS = 200_000


@dataclass
class Phase:
    name: str
    calls: int = 0
    ok: int = 0
    refused: int = 0
    failed: int = 0
    attempts: int = 0
    took: list[float] = field(default_factory=list)
    note: str = ""


async def bench_breaker(load: Load, breaker: BreakerSettings) -> tuple[Table, Table]:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("bench")
    server = HealthServer()
    await server.start()
    settings = ClientSettings(pool=PoolSettings(failed_replace_seconds=0.2), breaker=breaker)
    client = connect("health", [server.address], idempotent={CHECK}, settings=settings, meter=meter)
    stub = client.stub(health_pb2_grpc.HealthStub)
    request = health_pb2.HealthCheckRequest()

    def attempts() -> int:
        data = reader.get_metrics_data()
        return sum(
            int(getattr(point, "value", 0))
            for resource in (data.resource_metrics if data else ())
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == "nova.client.attempts"
            for point in metric.data.data_points
        )

    def check(phase: Phase) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            started = time.perf_counter()
            phase.calls += 1
            try:
                await stub.Check(request, timeout=TIMEOUT_SECONDS)
                phase.ok += 1
            except CircuitOpen:
                phase.refused += 1
                raise
            except aio.AioRpcError:
                phase.failed += 1
                raise
            finally:
                phase.took.append(time.perf_counter() - started)

        return call

    async def steady(call: Callable[[], Awaitable[None]]) -> str:
        await generate(call, load)
        return ""

    def until(state: str, event: str) -> Callable[[Callable[[], Awaitable[None]]], Awaitable[str]]:
        async def drive(call: Callable[[], Awaitable[None]]) -> str:
            started = time.perf_counter()
            while client.breaker.state != state:
                with contextlib.suppress(aio.AioRpcError):
                    await call()
                await asyncio.sleep(1 / load.rate)
            return f"{event} {(time.perf_counter() - started) * 1000:.0f} ms"

        return drive

    async def phase(
        name: str, drive: Callable[[Callable[[], Awaitable[None]]], Awaitable[str]]
    ) -> Phase:
        measured = Phase(name)
        before = attempts()
        measured.note = await drive(check(measured))
        measured.attempts = attempts() - before
        return measured

    phases = []
    try:
        await phase("warm-up", steady)
        phases.append(await phase("backend up", steady))
        await server.stop()
        phases.append(
            await phase(
                "backend stopped, until the breaker opens",
                until(pybreaker.STATE_OPEN, "opened after"),
            )
        )
        phases.append(await phase("breaker open, backend still down (probes only)", steady))
        await server.start()
        phases.append(
            await phase(
                "backend restarted, until the breaker closes",
                until(pybreaker.STATE_CLOSED, "closed after"),
            )
        )
    finally:
        await client.close()
        await server.stop()
    return _phase_table(phases, load, breaker), await _cost_table(breaker)


def _phase_table(phases: list[Phase], load: Load, breaker: BreakerSettings) -> Table:
    table = Table(
        title=(
            f"bench breaker: Health/Check at {load.rate:g}/s, {load.duration:g} s per "
            f"phase; breaker opens after {breaker.failures} failures, probes after "
            f"{breaker.reset_seconds:g} s; deadline {TIMEOUT_SECONDS * 1000:.0f} ms"
        ),
        title_justify="left",
    )
    table.add_column("phase", no_wrap=True)
    for heading in ("calls", "ok", "refused by breaker", "failed", "sent"):
        table.add_column(heading, justify="right")
    for heading in ("p50 ms", "p99 ms", "slowest ms"):
        table.add_column(heading, justify="right")
    table.add_column("")
    for phase in phases:
        took = sorted(phase.took)
        table.add_row(
            phase.name,
            *(str(n) for n in (phase.calls, phase.ok, phase.refused, phase.failed, phase.attempts)),
            f"{took[len(took) // 2] * 1000:.3f}",
            f"{took[int(len(took) * 0.99)] * 1000:.3f}",
            f"{took[-1] * 1000:.3f}",
            phase.note,
        )
    return table


async def _cost_table(settings: BreakerSettings) -> Table:
    """Per-decision cost in a tight loop: no network, no other layer."""
    closed = Breaker("bench", settings)
    call = OutgoingCall(CHECK, b"", None, None, 1.0, (), idempotent=True)

    async def answer(call: OutgoingCall) -> object:
        return None

    def admit_and_record() -> None:
        closed.record(closed.admit(), None)

    opened = Breaker("bench", BreakerSettings(failures=1, reset_seconds=3600))
    opened.record(opened.admit(), _unavailable())

    def refuse() -> None:
        try:
            opened.admit()
        except CircuitOpen:
            return

    rows = [
        ("admit + record success (closed)", _time_sync(admit_and_record)),
        ("refuse (open): builds the UNAVAILABLE error", _time_sync(refuse)),
        ("await breaker layer around a no-op attempt", await _time_async(closed, call, answer)),
        ("await the no-op attempt alone (baseline)", await _time_async(None, call, answer)),
    ]
    table = Table(title="bench breaker: cost per decision", title_justify="left")
    table.add_column("operation", no_wrap=True)
    table.add_column("µs per call", justify="right")
    for name, seconds in rows:
        table.add_row(name, f"{seconds * 1e6:.2f}")
    return table


def _unavailable() -> aio.AioRpcError:
    return aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, aio.Metadata(), aio.Metadata(), "", None)


def _time_sync(operation: Callable[[], None]) -> float:
    started = time.perf_counter()
    for _ in range(_LOOPS):
        operation()
    return (time.perf_counter() - started) / _LOOPS


async def _time_async(
    breaker: Breaker | None,
    call: OutgoingCall,
    answer: Callable[[OutgoingCall], Awaitable[object]],
) -> float:
    started = time.perf_counter()
    for _ in range(_LOOPS):
        if breaker is None:
            await answer(call)
        else:
            await breaker(call, answer)
    return (time.perf_counter() - started) / _LOOPS


@click.command(name="breaker")
@click.option("--rate", type=click.FloatRange(min=1), default=1000, show_default=True)
@click.option(
    "--duration",
    type=click.FloatRange(min=0.1),
    default=2,
    show_default=True,
    help="Seconds of load with the backend up, and again with it down.",
)
@click.option("--failures", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--reset", type=click.FloatRange(min=0.01), default=1, show_default=True)
def command(rate: float, duration: float, failures: int, reset: float) -> None:
    """A dependency dies and comes back: breaker timings, and its cost per decision."""
    quiet_unless_configured()
    load = Load(rate=rate, duration=duration, warmup=0, max_outstanding=1000)
    settings = BreakerSettings(failures=failures, reset_seconds=reset)

    async def main() -> None:
        console().print(*await bench_breaker(load, settings))

    run(main())
