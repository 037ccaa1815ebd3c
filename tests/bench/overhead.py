"""`./dev bench overhead`: what the server interceptor chain costs, on the cheapest RPC.

Three servers run side by side, each in its own process (so neither the client's CPU nor
another server's is charged to it): one with the full chain exactly as `nova up` builds it
(chained_server with default settings, the OpenTelemetry SDK installed with a live
Prometheus endpoint, the JSON access log written to a file), one with only the error
mapping and auth, one with no interceptors at all. All serve grpc.health.v1.Health/Check,
which does no work of its own, so the difference is the chain. Each is measured at the
same fixed rate (latency, and the server's CPU time per call from the kernel's
accounting), then at saturation: open loop far beyond what it can serve, with a bounded
number of calls in flight. The variants take turns, round after round, and the median
round is shown, so drift on a shared machine hits all of them.

The throughput cost is read from the server's CPU per call at saturation: a server bound
by its CPU serves 1/(CPU per call) calls per core, whatever else runs. Achieved calls/s is
shown too, but on a 2-core machine the load generator shares the cores with the server,
so it moves with the client and with neighbours as much as with the chain. The same
chains are counted in CPU instructions, layer by layer, by overhead_instructions.py.
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection

import click
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.table import Table

from services.runtime.server_layers import ServerLayers
from tests.bench.harness import (
    ERRORS_AND_AUTH,
    ServerProcess,
    bench_server,
    console,
    open_channels,
    run,
    serve_until_terminated,
    server_process,
    serving_health,
)
from tests.bench.loadgen import CLIENT_OVERLOADED, Call, Load, LoadResult, generate

_MAX_OUTSTANDING = 1000


@dataclass(frozen=True)
class HealthProcess:
    """What a spawned Health server runs (pickled to its process)."""

    layers: ServerLayers | None
    """None: no interceptors at all."""


def _serve_health(settings: HealthProcess, connection: Connection) -> None:
    @asynccontextmanager
    async def serving() -> AsyncIterator[int]:
        async with serving_health(bench_server(settings.layers)) as port:
            yield port

    serve_until_terminated(connection.send, serving)


VARIANTS: dict[str, ServerLayers | None] = {
    "no interceptors": None,
    "error mapping + auth": ERRORS_AND_AUTH,
    "full chain": ServerLayers(),
}


@dataclass(frozen=True)
class OverheadBench:
    rate: float
    """Calls/s of the fixed-rate runs."""
    rounds: int
    """Fixed-rate runs per variant, taken in turns so drift on a shared machine hits all."""
    saturation_rate: float
    """Calls/s offered in the saturation run: far more than a server can serve."""
    concurrency: int
    """Calls in flight at most in the saturation run."""
    duration: float
    warmup: float


@dataclass
class Measured:
    name: str
    server: ServerProcess
    check: Call
    fixed: list[LoadResult] = field(default_factory=list)
    cpu_us_per_call: list[float] = field(default_factory=list)
    saturated: list[LoadResult] = field(default_factory=list)
    saturated_cpu_us: list[float] = field(default_factory=list)
    """Server CPU per call served in each saturated run."""

    def median(self, value: Callable[[LoadResult], float]) -> float:
        return statistics.median(value(result) for result in self.fixed)


async def bench_overhead(options: OverheadBench) -> None:
    out = console()
    async with AsyncExitStack() as stack:
        variants = []
        for name, layers in VARIANTS.items():
            server = await stack.enter_async_context(
                server_process(_serve_health, HealthProcess(layers))
            )
            channels = await stack.enter_async_context(open_channels(server.address))
            variants.append(Measured(name, server, _health_check(channels)))
        fixed = Load(options.rate, options.duration, 0, _MAX_OUTSTANDING)
        for variant in variants:
            if options.warmup > 0:
                await generate(variant.check, replace(fixed, duration=options.warmup))
        for round_ in range(1, options.rounds + 1):
            for variant in variants:
                out.print(f"bench: {variant.name}, round {round_}, {options.rate:g}/s")
                before = variant.server.cpu_seconds()
                result = await generate(variant.check, fixed)
                cpu = variant.server.cpu_seconds() - before
                variant.fixed.append(result)
                variant.cpu_us_per_call.append(cpu / result.scheduled * 1e6)
        saturation = Load(options.saturation_rate, options.duration, 0, options.concurrency)
        for round_ in range(1, options.rounds + 1):
            for variant in variants:
                out.print(f"bench: {variant.name}, saturated, round {round_}")
                if options.warmup > 0:
                    await generate(variant.check, replace(saturation, duration=options.warmup))
                before = variant.server.cpu_seconds()
                result = await generate(variant.check, saturation)
                cpu = variant.server.cpu_seconds() - before
                variant.saturated.append(result)
                served = result.scheduled - result.errors.get(CLIENT_OVERLOADED, 0)
                variant.saturated_cpu_us.append(cpu / max(served, 1) * 1e6)
    out.print(table(variants, options))


def _health_check(channels: Sequence[aio.Channel]) -> Call:
    stubs = itertools.cycle([health_pb2_grpc.HealthStub(channel) for channel in channels])
    request = health_pb2.HealthCheckRequest()

    async def check() -> None:
        await next(stubs).Check(request, timeout=5)

    return check


def table(variants: Sequence[Measured], options: OverheadBench) -> Table:
    result = Table(
        title=(
            f"bench overhead: Health/Check; fixed rate {options.rate:g}/s, "
            f"saturation: {options.concurrency} in flight; each the median of "
            f"{options.rounds} runs of {options.duration:g} s, variants in turns"
        ),
        title_justify="left",
    )
    result.add_column("")
    for variant in variants:
        result.add_column(variant.name, justify="right")
    bare, full = variants[0], variants[-1]
    result.add_column(f"{full.name} / {bare.name}", justify="right")

    def line(label: str, value: Callable[[Measured], float], digits: int = 2) -> None:
        values = [value(variant) for variant in variants]
        ratio = f"{values[-1] / values[0]:.2f}" if values[0] else "-"
        result.add_row(label, *(f"{v:.{digits}f}" for v in values), ratio)

    line("p50 ms", lambda m: m.median(lambda r: r.p50_ms))
    line("p99 ms", lambda m: m.median(lambda r: r.p99_ms))
    line("server CPU µs per call", lambda m: statistics.median(m.cpu_us_per_call), 0)
    line("saturated calls/s", lambda m: _saturated(m).achieved_rate, 0)
    line("saturated: server CPU µs per call", lambda m: statistics.median(m.saturated_cpu_us), 0)
    cpu = _paired_ratio(full.saturated_cpu_us, bare.saturated_cpu_us)
    result.add_row("  the same, paired round by round", *[""] * len(variants), f"{cpu:.2f}")
    result.add_row(
        "errors (fixed / saturated)",
        *(f"{_errors(*m.fixed)} / {_errors(*m.saturated)}" for m in variants),
        "",
    )
    rate = _saturated(full).achieved_rate / _saturated(bare).achieved_rate
    result.caption = (
        f"full chain: {cpu - 1:.0%} more server CPU per call at saturation (paired), so a server "
        f"core serves {1 - 1 / cpu:.0%} fewer calls (goal: under 15%); achieved "
        f"throughput ratio {rate:.2f}, which also moves with the client sharing the cores"
    )
    return result


def _paired_ratio(values: Sequence[float], baseline: Sequence[float]) -> float:
    """The median of value/baseline over rounds: each round's variants ran back to back,
    so a slow spell of a shared machine cancels out of each ratio, where it would skew
    the ratio of two medians."""
    return statistics.median(value / base for value, base in zip(values, baseline, strict=True))


def _saturated(variant: Measured) -> LoadResult:
    """The saturated run of median throughput."""
    ranked = sorted(variant.saturated, key=lambda result: result.achieved_rate)
    return ranked[(len(ranked) - 1) // 2]


def _errors(*results: LoadResult) -> str:
    # Calls the client did not start because `concurrency` were in flight are the
    # saturation run's design, not the server's failure.
    shown: Counter[str] = Counter()
    for result in results:
        shown.update({code: n for code, n in result.errors.items() if code != CLIENT_OVERLOADED})
    return ", ".join(f"{code} {n}" for code, n in sorted(shown.items())) or "0"


@click.command(name="overhead")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=1000,
    show_default=True,
    help="Calls/s of the fixed-rate runs.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Runs per variant at the fixed rate and at saturation, taken in turns; the "
    "median is shown.",
)
@click.option(
    "--saturation-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=20000,
    show_default=True,
    help="Calls/s offered in the saturation run.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Calls in flight at most in the saturation run.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=3,
    show_default=True,
    help="Seconds measured per run.",
)
@click.option(
    "--warmup",
    type=click.FloatRange(min=0),
    default=1,
    show_default=True,
    help="Seconds of unmeasured calls before each run.",
)
def command(
    rate: float,
    rounds: int,
    saturation_rate: float,
    concurrency: int,
    duration: float,
    warmup: float,
) -> None:
    """The server interceptor chain vs none on Health/Check, side by side, each server
    in a subprocess: latency and CPU per call at a fixed rate, and saturated throughput."""
    run(bench_overhead(OverheadBench(rate, rounds, saturation_rate, concurrency, duration, warmup)))
