"""`./dev bench feed`: the home-feed query through the GraphQL gateway, four ways, and
FeedService.GetHomeFeed alone over gRPC.

The services run as `nova up` in a subprocess (like `./dev bench rpc`) and are seeded;
the gateway runs in this process on a free port, once per variant, and is driven over
real HTTP by the open-loop generator at one fixed rate: the page from FeedService with
DataLoaders and the document cache (the default), the gateway-side pull FeedService
replaced (ListFollowing, then ListPostsByAuthors: feed_baseline.py, the baseline the
other rows are compared with), without the document cache, and with per-field resolvers
(the N+1 pattern DataLoaders replace: per_field.py; offered at most N1_RATE, which is
what it survives on a 2-core machine). Each query asks for a page of posts with their
authors, like and comment counts, and latest 3 comments with their authors, as a
rotating signed-in demo user.

Then GetHomeFeed alone at `--rpc-rate` (gRPC to the feed service, over CHANNELS
connections, as the seeded users, whose timelines every variant has read by then: the
warm, common case of one Redis round trip).

Per variant: latency and achieved rate at the offered rate, RPCs per request (from the
gateway's counting client interceptor), the gateway's own time per request (its wall
time less the time at least one RPC was in flight: parse, validation, resolvers, JSON),
and capacity: requests/s of a closed loop of `--concurrency` clients. The gateway's own
time counts only the time when none of the request's RPCs is in flight: work done while
one is (as in the N+1 variant, where some always is) is not in it. Then the document
cache's hit and miss cost for the feed query.

The load generator shares this process and its event loop with the gateway, so its own
HTTP client work is part of the latency columns (equally for every variant) but not of
the gateway's own time, which is measured inside the gateway.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import click
import grpc
import httpx
from grpc import aio
from hdrh.histogram import HdrHistogram
from rich.progress import Progress
from rich.table import Table

from gateway.app import GatewayApp, RequestTiming, build_app
from gateway.clients import Target, open_clients
from gateway.loaders import Loaders
from gateway.persisted_queries import sha256
from gateway.server import serve_gateway
from gateway.settings import GatewaySettings
from nova.common.v1 import page_pb2
from nova.feed.v1 import feed_pb2, feed_pb2_grpc
from services.cli.gateway import gateway_targets
from services.cli.seed import DemoUser, Seeded, SeedPlan, seed
from services.registry import REGISTRY
from tests.bench import feed_baseline
from tests.bench.harness import (
    LOAD_COLUMNS,
    ServerProcess,
    console,
    error_counts,
    load_cells,
    nova_up,
    open_channels,
    run,
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


@dataclass(frozen=True)
class FeedBench:
    load: Load
    """Applied to each variant in turn."""
    users: int
    """Demo users to seed; each follows `follows` and has 5 posts with 3 comments each."""
    follows: int = 20
    page_size: int = 20
    capacity_seconds: float = 5.0
    """Length of each variant's closed-loop capacity run; 0 skips it."""
    concurrency: int = 16
    """Requests in flight in the capacity run."""
    rpc_load: Load | None = None
    """GetHomeFeed alone over gRPC; None skips it."""


@dataclass(frozen=True)
class Variant:
    name: str
    settings: GatewaySettings
    loaders: type[Loaders] = Loaders
    """The class of each request's DataLoaders."""
    install: Callable[[GatewayApp], None] | None = None
    """Changes the built app before it serves (the baseline's homeFeed resolver)."""
    max_rate: float | None = None
    """Offered at most this rate, whatever --rate says."""


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
    ),
)


@dataclass(frozen=True)
class VariantRow:
    name: str
    result: LoadResult
    rpcs_per_request: float
    gateway_p50_ms: float
    gateway_p99_ms: float
    """The gateway's own time per measured request (backend time excluded)."""
    capacity: float | None
    """Requests/s of the closed loop; None when skipped."""


@dataclass(frozen=True)
class CacheCost:
    miss_us: float
    """Median time to prepare the feed query: parse, limits, validation."""
    hit_us: float
    """Median time to find it prepared in the document cache."""


@dataclass(frozen=True)
class FeedReport:
    rows: list[VariantRow]
    cache: CacheCost
    get_home_feed: LoadResult | None = None
    """GetHomeFeed alone over gRPC; None when skipped."""

    def baseline(self) -> VariantRow:
        return next(row for row in self.rows if row.name == BASELINE)


class _Failed(aio.AioRpcError):
    """A failed GraphQL request, in the form the load generator counts (by status name)."""

    def __init__(self, code: str, details: str) -> None:
        status = grpc.StatusCode[code] if code in grpc.StatusCode.__members__ else None
        status = status or grpc.StatusCode.UNKNOWN
        super().__init__(status, aio.Metadata(), aio.Metadata(), details, None)


async def bench_feed(options: FeedBench) -> None:
    """Starts the services, seeds them, measures every variant and prints the tables."""
    out = console()
    async with nova_up(("user", "content", "feed")) as server:
        with Progress(console=out) as progress:
            seeded = await seed(
                server.addresses,
                SeedPlan(
                    users=options.users,
                    posts_per_user=5,
                    follows_per_user=options.follows,
                    comments_per_post=3,
                    likes_per_post=3,
                ),
                progress=progress,
            )
        await _until_quiet(server, say=out.print)
        report = await measure(server.addresses, seeded, options, say=out.print)
    for rendered in tables(report, options):
        out.print(rendered)


async def _until_quiet(server: ServerProcess, *, say: Callable[[str], None]) -> None:
    """Waits (at most QUIET_WAIT_SECONDS) until the services have taken in the seed's
    events (fan-out, rebuilds, counters): the first variant must not share the cores
    with that and the others not."""
    until = time.monotonic() + QUIET_WAIT_SECONDS
    while time.monotonic() < until:
        before = server.cpu_seconds()
        await asyncio.sleep(QUIET_WINDOW_SECONDS)
        busy = (server.cpu_seconds() - before) / QUIET_WINDOW_SECONDS
        if busy < QUIET_CORES:
            return
    say(f"bench: the services were still busy after {QUIET_WAIT_SECONDS:g} s; measuring anyway")


async def measure(
    addresses: Mapping[str, str],
    seeded: Seeded,
    options: FeedBench,
    *,
    say: Callable[[str], None] = lambda _: None,
) -> FeedReport:
    """Every variant against the services at `addresses`, as the users `seeded` made."""
    # The N+1 variant may overload the services on purpose; the table counts its failed
    # requests, so the gateway's warning per failed RPC would only bury the table.
    logging.getLogger("nova.gateway").setLevel(logging.ERROR)
    targets = gateway_targets(REGISTRY, addresses)
    rows = []
    for variant in VARIANTS:
        load = _variant_load(options.load, variant)
        say(f"bench: {variant.name} at {load.rate:g}/s")
        rows.append(await _measure_variant(targets, seeded, replace(options, load=load), variant))
    cache = await _cache_cost(targets)
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
                raise _Failed("FAILED_PRECONDITION", "an empty home feed")

        return await generate(call, load)


async def _measure_variant(
    targets: Mapping[str, Target], seeded: Seeded, options: FeedBench, variant: Variant
) -> VariantRow:
    timings: list[RequestTiming] = []
    # Requests the load generator gave up on still finish by their deadline before the
    # gateway stops, rather than being cancelled.
    grace = variant.settings.request_timeout_seconds
    async with serve_gateway(
        variant.settings,
        targets,
        host="127.0.0.1",
        grace_seconds=grace,
        observer=timings.append,
        loaders=variant.loaders,
    ) as gateway:
        if variant.install is not None:
            variant.install(gateway.app)
        limits = httpx.Limits(max_connections=options.load.max_outstanding)
        base_url = f"http://127.0.0.1:{gateway.port}"
        # No client timeout of its own: the load generator's counts as client_timeout.
        async with httpx.AsyncClient(
            base_url=base_url, limits=limits, timeout=None, trust_env=False
        ) as http:
            counter = gateway.app.executor.clients.counter
            call, requests = _feed_call(http, seeded.users, options.page_size)
            rpcs_before = counter.total
            result = await generate(call, options.load)
            rpcs_per_request = (counter.total - rpcs_before) / max(1, requests())
            # Completion order follows the schedule closely enough to drop the warm-up.
            measured = timings[options.load.warmup_calls :]
            capacity = await _capacity(call, options) if options.capacity_seconds else None
    own = HdrHistogram(1, _HIGHEST_MICROSECONDS, 3)
    for timing in measured:
        own.record_value(max(1, round((timing.total_seconds - timing.backend_seconds) * 1e6)))
    return VariantRow(
        name=variant.name,
        result=result,
        rpcs_per_request=rpcs_per_request,
        gateway_p50_ms=own.get_value_at_percentile(50) / 1000,
        gateway_p99_ms=own.get_value_at_percentile(99) / 1000,
        capacity=capacity,
    )


def _feed_call(
    http: httpx.AsyncClient, users: Sequence[DemoUser], page_size: int
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
            response = await http.post("/graphql", json=payload, headers=headers)
        except httpx.HTTPError as error:
            raise _Failed("UNAVAILABLE", str(error)) from None
        errors = response.json().get("errors")
        if response.status_code != 200 or errors:
            first = (errors or [{"message": f"HTTP {response.status_code}"}])[0]
            raise _Failed(first.get("extensions", {}).get("code", "UNKNOWN"), first["message"])

    return call, lambda: made


async def _capacity(call: Call, options: FeedBench) -> float:
    """Requests/s that `concurrency` clients, each sending as soon as the last reply came,
    complete in capacity_seconds: the most the gateway serves (a closed loop hides
    latency, so it is used for this number only)."""
    done = 0
    until = time.perf_counter() + options.capacity_seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < until:
            try:
                await call()
            except aio.AioRpcError:
                continue
            done += 1

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(options.concurrency):
            group.create_task(client())
    return done / (time.perf_counter() - started)


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
    load = options.load
    main = Table(
        title=(
            f"bench feed: homeFeed(first: {options.page_size}) with authors, stats and "
            f"3 comments; {load.duration:g} s per variant after {load.warmup:g} s warm-up, "
            f"{options.users} users following {options.follows} each; capacity: closed loop "
            f"of {options.concurrency}"
        ),
        title_justify="left",
    )
    main.add_column("gateway", no_wrap=True)
    headings = (
        "offered/s", "achieved/s", "p50 ms", "p99 ms", "p99 / baseline", "RPCs/request",
        "gateway p50 ms", "gateway p99 ms", "capacity req/s", "capacity / baseline",
    )  # fmt: skip
    for heading in headings:
        main.add_column(heading, justify="right")
    main.add_column("errors")
    baseline = report.baseline()
    for row in report.rows:
        measured = row.result
        latency = (
            (f"{measured.p50_ms:.2f}", f"{measured.p99_ms:.2f}")
            if measured.succeeded
            else ("-", "-")
        )
        main.add_row(
            row.name,
            f"{measured.offered_rate:g}",
            f"{measured.achieved_rate:.0f}",
            *latency,
            _ratio(measured.p99_ms, baseline.result.p99_ms)
            if measured.succeeded and baseline.result.succeeded
            else "-",
            f"{row.rpcs_per_request:.1f}",
            f"{row.gateway_p50_ms:.2f}",
            f"{row.gateway_p99_ms:.2f}",
            f"{row.capacity:.0f}" if row.capacity is not None else "-",
            _ratio(row.capacity, baseline.capacity)
            if row.capacity is not None and baseline.capacity
            else "-",
            error_counts(measured.errors),
        )
    cache = Table(title="document cache, feed query", title_justify="left")
    for heading in ("miss: parse + limits + validate µs", "hit µs", "saved per request µs"):
        cache.add_column(heading, justify="right")
    saved = report.cache.miss_us - report.cache.hit_us
    cache.add_row(f"{report.cache.miss_us:.0f}", f"{report.cache.hit_us:.1f}", f"{saved:.0f}")
    rendered = [main, cache]
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


def _ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x"


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
    help="GetHomeFeed calls per second when measured alone over gRPC (0 skips it).",
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
    help="Seconds of the closed-loop capacity run per variant (0 skips it).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Requests in flight in the capacity run.",
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
    concurrency: int,
) -> None:
    """The home-feed query through the GraphQL gateway at a fixed rate: from FeedService
    against the gateway-side pull it replaced, DataLoaders vs per-field resolvers, with
    and without the document cache; then GetHomeFeed alone over gRPC. Against `nova up`
    started in a subprocess on free ports and seeded."""
    try:
        load = Load(rate=rate, duration=duration, warmup=warmup, max_outstanding=max_outstanding)
        rpc_load = (
            Load(rate=rpc_rate, duration=duration, warmup=warmup, max_outstanding=1000)
            if rpc_rate
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
    run(bench_feed(options))
