"""`./dev bench feed`'s measurement against in-process services, at a tiny load: every
variant gets a row, the RPC counts show FeedService against the gateway-side pull and
DataLoaders against per-field resolvers, and GetHomeFeed alone is measured."""

from __future__ import annotations

from rich.console import Console

from services.cli.seed import SeedPlan, seed
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
        load=Load(rate=10, duration=0.5, warmup=0.1, max_outstanding=100),
        users=6,
        page_size=5,
        capacity_seconds=0.3,
        concurrency=2,
        rpc_load=Load(rate=20, duration=0.5, warmup=0.1, max_outstanding=100),
    )

    report = await measure(addresses, seeded, options)

    assert [row.name for row in report.rows] == [variant.name for variant in VARIANTS]
    batched, pulled, uncached, per_field = report.rows
    assert pulled.name == BASELINE
    for row in report.rows:
        assert row.result.errors == {}, row
        assert row.result.succeeded == row.result.scheduled
        assert 0 < row.gateway_p50_ms <= row.gateway_p99_ms
        assert row.capacity is not None
        assert row.capacity > 0
    # GetHomeFeed, the posts, their stats, comments, and authors with commenters.
    assert batched.rpcs_per_request == 5
    assert uncached.rpcs_per_request == batched.rpcs_per_request
    # One ListFollowing page, ListPostsByAuthors, stats, comments, commenters (the
    # followed authors come with ListFollowing).
    assert pulled.rpcs_per_request == 5
    assert pulled.result.succeeded > 0
    alone = report.get_home_feed
    assert alone is not None
    assert alone.errors == {}
    assert alone.succeeded == alone.scheduled > 0
    assert per_field.rpcs_per_request > 3 * batched.rpcs_per_request
    assert 0 < report.cache.hit_us < report.cache.miss_us

    console = Console(width=200, record=True)
    for table in tables(report, options):
        console.print(table)
    text = console.export_text()
    assert "per-field resolvers (N+1)" in text
    assert BASELINE in text
    assert "p99 / baseline" in text
    assert "FeedService/GetHomeFeed alone" in text
    assert "RPCs/request" in text
    assert "miss: parse + limits + validate µs" in text
