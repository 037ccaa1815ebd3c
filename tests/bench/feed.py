"""`./dev bench feed`: the home-feed query through the GraphQL gateway, four ways, and
FeedService.GetHomeFeed alone over gRPC; or, with `--target URL`, a gateway already
running.

The services run as `nova up` in a subprocess (like `./dev bench rpc`: free ports, a data
folder of its own, so a `./dev up` may run beside it) and are seeded. Each variant's
gateway runs in a process of its own (feed_gateway.py), as `nova serve gateway` would,
and is driven over real HTTP from this process, which no measurement includes: the page
from FeedService with DataLoaders and the document cache (the default), the gateway-side
pull FeedService replaced (ListFollowing, then ListPostsByAuthors: feed_baseline.py, the
baseline the other rows are compared with), without the document cache, and with
per-field resolvers (the N+1 pattern DataLoaders replace: per_field.py; offered at most
N1_RATE, which is what it survives on a 2-core machine, and left out of the capacity
runs). Each query asks for a page of posts with their authors, like and comment counts,
and latest 3 comments with their authors, as a rotating signed-in demo user.

Per variant, first an open loop at one fixed rate: a warm-up, then the measured window,
which starts once the warm-up's requests are answered. Over that window: latency and
achieved rate, RPCs per request and the gateway's own time per request (both counted in
the gateway process and asked for over its pipe: the own time is its wall time less the
time at least one RPC was in flight, so work done while one is, as in the N+1 variant
where some always is, is not in it), and the CPU per request of every process involved
(tests/bench/cpu.py): the gateway, `nova up`, PostgreSQL and Redis. An external
PostgreSQL or Redis (NOVA_DATABASE_URL, NOVA_REDIS_URL) is counted whole, with whatever
else runs on it. Then capacity: closed loops of each `--concurrency` level of clients.
Then the document cache's hit and miss cost for the feed query, and GetHomeFeed alone at
`--rpc-rate` (gRPC to the feed service, over CHANNELS connections, as the seeded users,
whose timelines every variant has read by then: the warm, common case of one Redis round
trip).

With `--target URL` nothing is started: the services at NOVA_USER_ADDRESS,
NOVA_CONTENT_ADDRESS and NOVA_FEED_ADDRESS (as `nova seed` finds them) are seeded, and the
open loop and the capacity levels run against the URL. There are no variants and no
gateway counters; CPU is counted for the processes found on this machine by the ports
they listen on (the gateway's, the services'; PostgreSQL and Redis as this environment's
NOVA_DATABASE_URL / NOVA_REDIS_URL, or the embedded ones of NOVA_DATA_DIR, name them).

The load generator is Python (httpx on uvloop) and shares the machine's cores with what
it measures, though no process: at the capacity levels on a small machine its own CPU
can limit what the gateway is offered.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import click
import grpc
import httpx
import psutil
from grpc import aio
from hdrh.histogram import HdrHistogram
from rich.progress import Progress
from rich.table import Table

from gateway.app import build_app
from gateway.clients import Target, open_clients
from gateway.persisted_queries import sha256
from gateway.settings import GatewaySettings
from interceptors.client.targets import parse_target
from nova.common.v1 import page_pb2
from nova.feed.v1 import feed_pb2, feed_pb2_grpc
from services.cli.common import load_config
from services.cli.gateway import gateway_targets
from services.cli.seed import DemoUser, Seeded, SeedPlan, seed
from services.registry import REGISTRY
from services.runtime.config import Config
from tests.bench import cpu, feed_baseline
from tests.bench.cpu import Component
from tests.bench.feed_gateway import GatewayCounters, GatewayJob, Variant, ask, serve_variant
from tests.bench.harness import (
    LOAD_COLUMNS,
    console,
    error_counts,
    load_cells,
    nova_up,
    open_channels,
    run,
    server_process,
)
from tests.bench.loadgen import Call, Load, LoadResult, generate
from tests.bench.per_field import PerFieldLoaders

FEED_QUERY = """
query HomeFeed($first: Int!) {
  homeFeed(first: $first) {
    edges {
      cursor
      node {
        id text createdAt
        author { id handle displayName }
        likeCount commentCount viewerHasLiked
        comments(first: 3) { id text createdAt author { id handle displayName } }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""

_HIGHEST_MICROSECONDS = 60_000_000
_CACHE_SAMPLES = 300
N1_RATE = 5.0
"""The per-field variant is offered at most this many requests/s: above it, on a 2-core
machine, its queue only grows and the run measures the client's timeouts."""
BASELINE = "gateway-side pull (before FeedService)"
QUIET_CORES = 0.1
"""The services are idle after the seed below this CPU use (cores, over QUIET_WINDOW)."""
QUIET_WINDOW_SECONDS = 1.0
QUIET_WAIT_SECONDS = 60.0
CONCURRENCY = (1, 8, 32)
"""The capacity runs' levels of requests in flight (issue 17's)."""


@dataclass(frozen=True)
class FeedBench:
    load: Load
    """Applied to each variant in turn."""
    users: int
    """Demo users to seed; each follows `follows` and has 5 posts with 3 comments each."""
    follows: int = 20
    page_size: int = 20
    capacity_seconds: float = 5.0
    """Length of each closed-loop capacity run; 0 skips them."""
    concurrency: tuple[int, ...] = CONCURRENCY
    """Requests in flight in each capacity run, one run per level."""
    rpc_load: Load | None = None
    """GetHomeFeed alone over gRPC; None skips it."""


VARIANTS = (
    Variant("FeedService, DataLoaders + document cache", GatewaySettings(port=0)),
    Variant(BASELINE, GatewaySettings(port=0), install=feed_baseline.install),
    Variant(
        "FeedService, DataLoaders, no document cache",
        GatewaySettings(port=0, document_cache_size=0),
    ),
    Variant(
        "FeedService, per-field resolvers (N+1)",
        GatewaySettings(port=0),
        PerFieldLoaders,
        max_rate=N1_RATE,
        capacity=False,
    ),
)


@dataclass(frozen=True)
class Capacity:
    """One closed-loop run: `concurrency` clients, each sending as soon as its reply came."""

    concurrency: int
    rate: float
    """Successful requests/s."""
    p50_ms: float
    p99_ms: float
    """Closed-loop latency (from each send, so a queue shows less than in an open loop)."""
    errors: int


@dataclass(frozen=True)
class VariantRow:
    name: str
    result: LoadResult
    rpcs_per_request: float | None
    gateway_p50_ms: float | None
    gateway_p99_ms: float | None
    """The gateway's own time per measured request (backend time excluded); None with
    --target (no counters to ask)."""
    cpu_ms: Mapping[str, float]
    """CPU ms per request sent in the measured window, by component."""
    capacity: tuple[Capacity, ...] = ()
    """One per concurrency level; empty when skipped."""

    @property
    def cpu_total_ms(self) -> float:
        return sum(self.cpu_ms.values())


@dataclass(frozen=True)
class CacheCost:
    miss_us: float
    """Median time to prepare the feed query: parse, limits, validation."""
    hit_us: float
    """Median time to find it prepared in the document cache."""


@dataclass(frozen=True)
class FeedReport:
    rows: list[VariantRow]
    cache: CacheCost | None = None
    """None with --target."""
    get_home_feed: LoadResult | None = None
    """GetHomeFeed alone over gRPC; None when skipped."""

    def baseline(self) -> VariantRow | None:
        return next((row for row in self.rows if row.name == BASELINE), None)


class RequestFailed(aio.AioRpcError):
    """A failed GraphQL request, in the form the load generator counts (by status name)."""

    def __init__(self, code: str, details: str) -> None:
        status = grpc.StatusCode[code] if code in grpc.StatusCode.__members__ else None
        status = status or grpc.StatusCode.UNKNOWN
        super().__init__(status, aio.Metadata(), aio.Metadata(), details, None)


def _plan(options: FeedBench) -> SeedPlan:
    return SeedPlan(
        users=options.users,
        posts_per_user=5,
        follows_per_user=options.follows,
        comments_per_post=3,
        likes_per_post=3,
    )


async def bench_feed(options: FeedBench) -> None:
    """Starts the services, seeds them, measures every variant and prints the tables."""
    out = console()
    async with nova_up(("user", "content", "feed")) as server:
        with Progress(console=out) as progress:
            seeded = await seed(server.addresses, _plan(options), progress=progress)
        assert server.data_dir is not None
        services = Component("nova up", cpu.process(server.pid))
        await _until_quiet(services, say=out.print)
        # As nova_up passes them on to `nova up`.
        components = _found(
            [
                services,
                _component("PostgreSQL", cpu.postgres(_env("NOVA_DATABASE_URL"), server.data_dir)),
                _component("Redis", cpu.redis(_env("NOVA_REDIS_URL"), server.pid)),
            ],
            say=out.print,
        )
        report = await measure(
            server.addresses, seeded, options, components=components, say=out.print
        )
    for rendered in tables(report, options):
        out.print(rendered)


async def bench_target(url: str, options: FeedBench) -> None:
    """Seeds the services of this environment's configuration and measures the gateway
    at `url` with them."""
    out = console()
    config = load_config()
    with Progress(console=out) as progress:
        seeded = await seed(
            config.addresses, _plan(options), progress=progress, tls=config.clients.tls
        )
    components = _found(target_components(url, config), say=out.print)
    if not components:
        out.print(f"bench: {url} is not served from this machine; no CPU is counted")
    services = [found for found in components if found.name in _SERVICES]
    if services:
        await _until_quiet(*services, say=out.print)
    out.print(f"bench: {url} at {options.load.rate:g}/s")
    row = await measure_url(url, url, seeded.users, options, components)
    for rendered in tables(FeedReport(rows=[row]), options):
        out.print(rendered)


def target_components(url: str, config: Config) -> list[Component]:
    """What CPU can be counted for a running gateway at `url` and the services, PostgreSQL
    and Redis `config` names, found by the ports they listen on (one component for the
    gateway and services when one process serves them all, as `nova up` does)."""
    gateway_port = cpu.loopback_port(url, 443 if url.startswith("https:") else 80)
    if gateway_port is None:
        return []
    gateway = cpu.listening(gateway_port)
    service_ports = [
        port
        for name in ("user", "content", "feed")
        for entry in parse_target(config.addresses[name])
        if (port := cpu.loopback_port(f"grpc://{entry.removeprefix('dns:///')}", 0))
    ]

    def services() -> Sequence[psutil.Process]:
        found = {
            process.pid: process for port in service_ports for process in cpu.listening(port)()
        }
        return list(found.values())

    gateway_pids = {process.pid for process in gateway()}
    service_pids = {process.pid for process in services()}
    components: list[Component] = []
    if gateway_pids and gateway_pids == service_pids:
        components.append(Component("gateway + services", gateway))
        nova = next(iter(gateway_pids)) if len(gateway_pids) == 1 else None
    else:
        components += [Component("gateway", gateway), Component("services", services)]
        nova = next(iter(service_pids)) if len(service_pids) == 1 else None
    components.append(_component("PostgreSQL", cpu.postgres(config.database_url, config.data_dir)))
    components.append(_component("Redis", cpu.redis(config.redis.url, nova)))
    return components


_SERVICES = ("gateway + services", "services")
"""target_components' names for the processes that take in the seed's events."""


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def _component(name: str, find: cpu.Find | None) -> Component:
    return Component(name, find or (lambda: []))


def _found(components: Sequence[Component], *, say: Callable[[str], None]) -> list[Component]:
    """The components with a process to count now; the others are named as not counted."""
    found = []
    for component in components:
        if component.find():
            found.append(component)
        else:
            say(f"bench: no {component.name} process found on this machine; its CPU is not counted")
    return found


async def _until_quiet(*components: Component, say: Callable[[str], None]) -> None:
    """Waits (at most QUIET_WAIT_SECONDS) until the services have taken in the seed's
    events (fan-out, rebuilds, counters): the first variant must not share the cores
    with that and the others not."""
    until = time.monotonic() + QUIET_WAIT_SECONDS
    while time.monotonic() < until:
        before = cpu.read(components)
        await asyncio.sleep(QUIET_WINDOW_SECONDS)
        busy = sum(cpu.used(before, cpu.read(components)).values()) / QUIET_WINDOW_SECONDS
        if busy < QUIET_CORES:
            return
    say(f"bench: the services were still busy after {QUIET_WAIT_SECONDS:g} s; measuring anyway")


async def measure(
    addresses: Mapping[str, str],
    seeded: Seeded,
    options: FeedBench,
    *,
    components: Sequence[Component] = (),
    say: Callable[[str], None] = lambda _: None,
) -> FeedReport:
    """Every variant, each in a gateway process of its own, against the services at
    `addresses`, as the users `seeded` made; CPU is counted for the gateway and
    `components`."""
    rows = []
    for variant in VARIANTS:
        load = _variant_load(options.load, variant)
        say(f"bench: {variant.name} at {load.rate:g}/s")
        job = GatewayJob(variant, dict(addresses))
        async with server_process(serve_variant, job) as gateway:
            control = gateway.control
            assert control is not None
            rows.append(
                await measure_url(
                    variant.name,
                    f"http://{gateway.address}/graphql",
                    seeded.users,
                    replace(options, load=load),
                    [Component("gateway", cpu.process(gateway.pid)), *components],
                    counters=functools.partial(ask, control),
                    capacity=variant.capacity,
                )
            )
    cache = await _cache_cost(gateway_targets(REGISTRY, addresses))
    alone = None
    if options.rpc_load is not None:
        say(f"bench: FeedService/GetHomeFeed alone at {options.rpc_load.rate:g}/s")
        alone = await _get_home_feed_alone(
            addresses["feed"], seeded, options.rpc_load, options.page_size
        )
    return FeedReport(rows=rows, cache=cache, get_home_feed=alone)


def _variant_load(load: Load, variant: Variant) -> Load:
    if variant.max_rate is None or load.rate <= variant.max_rate:
        return load
    return replace(load, rate=variant.max_rate)


async def measure_url(
    name: str,
    url: str,
    users: Sequence[DemoUser],
    options: FeedBench,
    components: Sequence[Component],
    *,
    counters: Callable[[], Awaitable[GatewayCounters]] | None = None,
    capacity: bool = True,
) -> VariantRow:
    """The open loop at options.load against the gateway at `url` (CPU of `components`
    and the gateway's `counters`, when it can be asked, over the measured window only),
    then the capacity levels."""
    load = options.load
    limits = httpx.Limits(max_connections=max(load.max_outstanding, *options.concurrency))
    # No client timeout of its own: the load generator's counts as client_timeout.
    async with httpx.AsyncClient(limits=limits, timeout=None, trust_env=False) as http:
        call, made = _feed_call(http, url, users, options.page_size)
        if load.warmup_calls:
            await generate(call, replace(load, duration=load.warmup, warmup=0))
        if counters is not None:
            await counters()  # only the measured window's from here
        sent = made()
        before = cpu.read(components)
        result = await generate(call, replace(load, warmup=0))
        used = cpu.used(before, cpu.read(components))
        requests = max(1, made() - sent)
        counted = await counters() if counters is not None else None
        runs: tuple[Capacity, ...] = ()
        if capacity and options.capacity_seconds:
            runs = tuple(
                [
                    await _capacity(call, level, options.capacity_seconds)
                    for level in options.concurrency
                ]
            )
    return VariantRow(
        name=name,
        result=result,
        rpcs_per_request=counted.rpcs / requests if counted else None,
        gateway_p50_ms=counted.own_p50_ms if counted else None,
        gateway_p99_ms=counted.own_p99_ms if counted else None,
        cpu_ms={component: seconds * 1000 / requests for component, seconds in used.items()},
        capacity=runs,
    )


async def _get_home_feed_alone(
    address: str, seeded: Seeded, load: Load, page_size: int
) -> LoadResult:
    """GetHomeFeed at a fixed rate as the seeded users, each page the bench's page size."""
    async with open_channels(address) as channels:
        stubs = itertools.cycle([feed_pb2_grpc.FeedServiceStub(channel) for channel in channels])
        viewers = itertools.cycle(seeded.users)
        request = feed_pb2.GetHomeFeedRequest(page=page_pb2.PageRequest(page_size=page_size))

        async def call() -> None:
            response = await next(stubs).GetHomeFeed(request, metadata=next(viewers).metadata)
            if not response.items:
                raise RequestFailed("FAILED_PRECONDITION", "an empty home feed")

        return await generate(call, load)


def _feed_call(
    http: httpx.AsyncClient, url: str, users: Sequence[DemoUser], page_size: int
) -> tuple[Call, Callable[[], int]]:
    """The feed request as a load-generator call, and a count of the calls made."""
    viewers = itertools.cycle(users)
    made = 0
    payload = {"query": FEED_QUERY, "variables": {"first": page_size}}

    async def call() -> None:
        nonlocal made
        made += 1
        viewer = next(viewers)
        headers = {"authorization": f"Bearer {viewer.token}"}
        try:
            response = await http.post(url, json=payload, headers=headers)
        except httpx.HTTPError as error:
            raise RequestFailed("UNAVAILABLE", str(error)) from None
        errors = response.json().get("errors")
        if response.status_code != 200 or errors:
            first = (errors or [{"message": f"HTTP {response.status_code}"}])[0]
            code = first.get("extensions", {}).get("code", "UNKNOWN")
            raise RequestFailed(code, first["message"])

    return call, lambda: made


async def _capacity(call: Call, concurrency: int, seconds: float) -> Capacity:
    """`concurrency` clients, each sending as soon as its last reply came, for `seconds`:
    the requests/s the gateway completes, and their (closed-loop) latency."""
    done = 0
    errors = 0
    latency = HdrHistogram(1, _HIGHEST_MICROSECONDS, 3)
    until = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done, errors
        while time.perf_counter() < until:
            sent = time.perf_counter()
            try:
                await call()
            except aio.AioRpcError:
                errors += 1
                continue
            done += 1
            spent = round((time.perf_counter() - sent) * 1e6)
            latency.record_value(min(max(1, spent), _HIGHEST_MICROSECONDS))

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(client())
    return Capacity(
        concurrency=concurrency,
        rate=done / (time.perf_counter() - started),
        p50_ms=latency.get_value_at_percentile(50) / 1000,
        p99_ms=latency.get_value_at_percentile(99) / 1000,
        errors=errors,
    )


async def _cache_cost(targets: Mapping[str, Target]) -> CacheCost:
    """Preparing the feed query from its text versus finding it in the cache."""
    query_hash = sha256(FEED_QUERY)
    async with open_clients(targets) as clients:
        uncached = build_app(replace(VARIANTS[0].settings, document_cache_size=0), clients)
        miss = _median_us(lambda: uncached.executor.prepare(query_hash, FEED_QUERY))
        cached = build_app(VARIANTS[0].settings, clients)
        cached.executor.prepare(query_hash, FEED_QUERY)
        hit = _median_us(lambda: cached.executor.prepare(query_hash, FEED_QUERY))
    return CacheCost(miss_us=miss, hit_us=hit)


def _median_us(action: Callable[[], Any]) -> float:
    samples = []
    for _ in range(_CACHE_SAMPLES):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1e6)
    return statistics.median(samples)


def tables(report: FeedReport, options: FeedBench) -> list[Table]:
    rendered = [_open_loop_table(report, options)]
    if any(row.cpu_ms for row in report.rows):
        rendered.append(_cpu_table(report, options))
    if any(row.capacity for row in report.rows):
        rendered.append(_capacity_table(report, options))
    cache = report.cache
    if cache is not None:
        table = Table(title="document cache, feed query", title_justify="left")
        for heading in ("miss: parse, limits, validate, plan µs", "hit µs", "saved per request µs"):
            table.add_column(heading, justify="right")
        saved = cache.miss_us - cache.hit_us
        table.add_row(f"{cache.miss_us:.0f}", f"{cache.hit_us:.1f}", f"{saved:.0f}")
        rendered.append(table)
    alone = report.get_home_feed
    if alone is not None and options.rpc_load is not None:
        rpc = Table(
            title=(
                f"FeedService/GetHomeFeed alone (gRPC, page of {options.page_size}, warm "
                f"timelines): {options.rpc_load.duration:g} s after "
                f"{options.rpc_load.warmup:g} s warm-up"
            ),
            title_justify="left",
        )
        rpc.add_column("rpc", no_wrap=True)
        for heading in LOAD_COLUMNS:
            rpc.add_column(heading, justify="right")
        rpc.add_column("errors")
        rpc.add_row("FeedService/GetHomeFeed", *load_cells(alone), error_counts(alone.errors))
        rendered.append(rpc)
    return rendered


def _open_loop_table(report: FeedReport, options: FeedBench) -> Table:
    load = options.load
    table = Table(
        title=(
            f"bench feed: homeFeed(first: {options.page_size}) with authors, stats and "
            f"3 comments, {options.users} users following {options.follows} each; open loop, "
            f"{load.duration:g} s measured per gateway after {load.warmup:g} s warm-up, from "
            "a load generator outside the gateway's process"
        ),
        title_justify="left",
    )
    table.add_column("gateway", no_wrap=True)
    baseline = report.baseline()
    counted = any(row.rpcs_per_request is not None for row in report.rows)
    headings = [
        "offered/s", "achieved/s", "p50 ms", "p90 ms", "p99 ms",
        *(["p99 / baseline"] if baseline else []),
        *(["RPCs/request", "gateway p50 ms", "gateway p99 ms"] if counted else []),
    ]  # fmt: skip
    for heading in headings:
        table.add_column(heading, justify="right")
    table.add_column("errors")
    for row in report.rows:
        measured = row.result
        latency = (measured.p50_ms, measured.p90_ms, measured.p99_ms)
        cells = [
            f"{measured.offered_rate:g}",
            f"{measured.achieved_rate:.0f}",
            *(f"{ms:.2f}" if measured.succeeded else "-" for ms in latency),
        ]
        if baseline is not None:
            both = measured.succeeded and baseline.result.succeeded
            cells.append(_ratio(measured.p99_ms, baseline.result.p99_ms) if both else "-")
        if counted:
            cells += [
                _cell(row.rpcs_per_request, ".1f"),
                _cell(row.gateway_p50_ms, ".2f"),
                _cell(row.gateway_p99_ms, ".2f"),
            ]
        table.add_row(row.name, *cells, error_counts(measured.errors))
    return table


def _cpu_table(report: FeedReport, options: FeedBench) -> Table:
    table = Table(
        title=(
            "CPU ms per request (user + system) over each measured open-loop window, by "
            "process; PostgreSQL and Redis whole, with anything else they serve"
        ),
        title_justify="left",
    )
    table.add_column("gateway", no_wrap=True)
    names = list(dict.fromkeys(name for row in report.rows for name in row.cpu_ms))
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    baseline = report.baseline()
    if baseline is not None:
        table.add_column("total / baseline", justify="right")
    for row in report.rows:
        cells = [*(_cell(row.cpu_ms.get(name), ".2f") for name in names)]
        cells.append(f"{row.cpu_total_ms:.2f}")
        if baseline is not None:
            ratio = baseline.cpu_total_ms and row.cpu_total_ms / baseline.cpu_total_ms
            cells.append(f"{ratio:.2f}x" if ratio else "-")
        table.add_row(row.name, *cells)
    return table


def _capacity_table(report: FeedReport, options: FeedBench) -> Table:
    table = Table(
        title=(
            f"capacity: a closed loop of c clients per level, {options.capacity_seconds:g} s "
            "each, every client sending when its reply came (closed-loop latency: it hides "
            "the queueing an open loop shows)"
        ),
        title_justify="left",
    )
    table.add_column("gateway", no_wrap=True)
    baseline = report.baseline()
    headings = ["c", "req/s", "p50 ms", "p99 ms", *(["req/s / baseline"] if baseline else [])]
    for heading in [*headings, "errors"]:
        table.add_column(heading, justify="right")
    base = {run.concurrency: run.rate for run in baseline.capacity} if baseline else {}
    for row in report.rows:
        if not row.capacity:
            table.add_row(row.name, *["-"] * len(headings), "-")
        for index, run_ in enumerate(row.capacity):
            cells = [
                str(run_.concurrency),
                f"{run_.rate:.0f}",
                f"{run_.p50_ms:.1f}",
                f"{run_.p99_ms:.1f}",
            ]
            if baseline is not None:
                level = base.get(run_.concurrency)
                cells.append(_ratio(run_.rate, level) if level else "-")
            table.add_row(
                row.name if index == 0 else "",
                *cells,
                str(run_.errors),
                end_section=index == len(row.capacity) - 1,
            )
    return table


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x"


def comma_levels(context: click.Context, parameter: click.Parameter, value: str) -> tuple[int, ...]:
    """--concurrency's comma list, e.g. "1,8,32"."""
    try:
        levels = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"a comma list of whole numbers, got {value!r}") from None
    if not levels or min(levels) < 1:
        raise click.BadParameter(f"every level must be at least 1, got {value!r}")
    return levels


@click.command(name="feed")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=50,
    show_default=True,
    help="Feed requests started per second, whatever the replies do (the per-field "
    f"variant is offered at most {N1_RATE:g}/s; capacity shows each variant's ceiling).",
)
@click.option(
    "--rpc-rate",
    type=click.FloatRange(min=0),
    default=500,
    show_default=True,
    help="GetHomeFeed calls per second when measured alone over gRPC (0 skips it; "
    "not with --target).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=10,
    show_default=True,
    help="Seconds measured per variant.",
)
@click.option(
    "--warmup",
    type=click.FloatRange(min=0),
    default=2,
    show_default=True,
    help="Seconds of unmeasured requests before each variant's measurement.",
)
@click.option(
    "--max-outstanding",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Requests in flight at most; requests due beyond it count as client_overloaded.",
)
@click.option(
    "--users", type=click.IntRange(min=2), default=100, show_default=True, help="Demo users."
)
@click.option(
    "--follows",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Users each demo user follows (at most --users - 1): the gateway-side pull pages "
    "through them on every request.",
)
@click.option("--page-size", type=click.IntRange(min=1, max=100), default=20, show_default=True)
@click.option(
    "--capacity-seconds",
    type=click.FloatRange(min=0),
    default=5,
    show_default=True,
    help="Seconds of each closed-loop capacity run (0 skips them).",
)
@click.option(
    "--concurrency",
    default=",".join(map(str, CONCURRENCY)),
    show_default=True,
    callback=comma_levels,
    help="Requests in flight in the capacity runs: a comma list, one run per level.",
)
@click.option(
    "--target",
    metavar="URL",
    help="Measure the gateway already serving GraphQL at URL (e.g. `./dev up`'s "
    "http://localhost:8080/graphql) instead of starting anything: seeds --users more "
    "demo users into the services at NOVA_USER_ADDRESS, NOVA_CONTENT_ADDRESS and "
    "NOVA_FEED_ADDRESS, then runs the open loop and the capacity levels only.",
)
def command(
    rate: float,
    rpc_rate: float,
    duration: float,
    warmup: float,
    max_outstanding: int,
    users: int,
    follows: int,
    page_size: int,
    capacity_seconds: float,
    concurrency: tuple[int, ...],
    target: str | None,
) -> None:
    """The home-feed query through the GraphQL gateway at a fixed rate and at fixed
    concurrency levels: from FeedService against the gateway-side pull it replaced,
    DataLoaders vs per-field resolvers, with and without the document cache, each gateway
    in a process of its own; then GetHomeFeed alone over gRPC. Against `nova up` started
    in a subprocess on free ports and seeded, or with --target against a running
    gateway."""
    try:
        load = Load(rate=rate, duration=duration, warmup=warmup, max_outstanding=max_outstanding)
        rpc_load = (
            Load(rate=rpc_rate, duration=duration, warmup=warmup, max_outstanding=1000)
            if rpc_rate and target is None
            else None
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    options = FeedBench(
        load=load,
        users=users,
        follows=follows,
        page_size=page_size,
        capacity_seconds=capacity_seconds,
        concurrency=concurrency,
        rpc_load=rpc_load,
    )
    run(bench_feed(options) if target is None else bench_target(target, options))
