"""`./dev bench feed`'s measurement against in-process services, at a tiny load: every
variant gets a row from a gateway process of its own, the RPC counts show FeedService
against the gateway-side pull and DataLoaders against per-field resolvers, the CPU of the
gateway and of the services is counted, the capacity levels run (but for N+1), and
GetHomeFeed alone is measured."""

from __future__ import annotations

import os

from rich.console import Console

from services.cli.seed import SeedPlan, seed
from tests.bench import cpu
from tests.bench.feed import BASELINE, VARIANTS, FeedBench, measure, tables
from tests.bench.loadgen import Load
from tests.conftest import EventsSettled


async def test_the_feed_bench_measures_every_variant_and_prints_its_tables(
    addresses: dict[str, str], feed_events: EventsSettled
) -> None:
    seeded = await seed(
        addresses,
        SeedPlan(users=6, posts_per_user=2, follows_per_user=3, comments_per_post=2),
        rng_seed=3,
    )
    options = FeedBench(
        # A handful of requests: this checks the measurement, not the machine (a busy
        # machine must not turn N+1 requests into client_overloaded errors).
        load=Load(rate=10, duration=0.5, warmup=0.2, max_outstanding=100),
        users=6,
        page_size=5,
        capacity_seconds=0.3,
        concurrency=(1, 2),
        rpc_load=Load(rate=20, duration=0.5, warmup=0.1, max_outstanding=100),
    )
    # The services run in this process (with the load generator, here).
    services = cpu.Component("services", cpu.process(os.getpid()))

    report = await measure(addresses, seeded, options, components=[services])

    assert [row.name for row in report.rows] == [variant.name for variant in VARIANTS]
    batched, pulled, uncached, per_field = report.rows
    assert pulled.name == BASELINE
    for row in report.rows:
        assert row.result.errors == {}, row
        assert row.result.succeeded == row.result.scheduled
        assert row.gateway_p50_ms is not None
        assert row.gateway_p99_ms is not None
        assert 0 < row.gateway_p50_ms <= row.gateway_p99_ms
        # Each gateway process did work for the measured requests; so did the services.
        assert row.cpu_ms["gateway"] > 0, row
        assert row.cpu_ms["services"] > 0, row
        assert row.cpu_total_ms == row.cpu_ms["gateway"] + row.cpu_ms["services"]
    for row in (batched, pulled, uncached):
        assert [run.concurrency for run in row.capacity] == [1, 2]
        for run in row.capacity:
            assert run.rate > 0
            assert run.errors == 0
            assert 0 < run.p50_ms <= run.p99_ms
    assert per_field.capacity == ()
    # GetHomeFeed, the posts with their stats and comments, and authors with commenters:
    # counted in the gateway process, for the measured window only.
    assert batched.rpcs_per_request == 3
    assert uncached.rpcs_per_request == batched.rpcs_per_request
    # One ListFollowing page, ListPostsByAuthors, stats, comments, commenters (the
    # followed authors come with ListFollowing).
    assert pulled.rpcs_per_request == 5
    assert per_field.rpcs_per_request is not None
    assert per_field.rpcs_per_request > 3 * batched.rpcs_per_request
    alone = report.get_home_feed
    assert alone is not None
    assert alone.errors == {}
    assert alone.succeeded == alone.scheduled > 0
    assert report.cache is not None
    assert 0 < report.cache.hit_us < report.cache.miss_us

    console = Console(width=250, record=True)
    for table in tables(report, options):
        console.print(table)
    text = console.export_text()
    assert "per-field resolvers (N+1)" in text
    assert BASELINE in text
    assert "p99 / baseline" in text
    assert "FeedService/GetHomeFeed alone" in text
    assert "RPCs/request" in text
    assert "req/s / baseline" in text
    assert "CPU ms per request" in text
    assert "miss: parse, limits, validate, plan µs" in text
