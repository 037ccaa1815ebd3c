"""`./dev bench fanout` at a tiny size, end to end: `nova up` on a database and Redis of
the bench's own, followers made by RPCs, posts fanned out to every one of them, a big
author's post written to none, and its followers' reads merging it."""

from __future__ import annotations

from rich.console import Console

from tests.bench.fanout import FanoutBench, measure, own_backing, tables
from tests.bench.harness import nova_up
from tests.bench.loadgen import Load


async def test_the_fanout_bench_times_each_post_and_counts_the_big_authors_writes(
    server_url: str,
) -> None:
    options = FanoutBench(
        followers=12,
        posts=2,
        big_followers=40,
        readers=3,
        followed_authors=2,
        read_load=Load(rate=20, duration=0.5, warmup=0.1, max_outstanding=100),
        concurrency=4,
        wait_seconds=60,
    )
    async with (
        own_backing(server_url) as backing,
        nova_up(("user", "content", "feed"), env=backing.env(options)) as server,
    ):
        report = await measure(server.addresses, backing, options)

    assert len(report.posts) == 2
    for post in report.posts:
        assert 0 < post.seconds_to_first <= post.seconds_to_last
        # One write per follower's timeline (the author never read theirs: none built).
        assert post.zadds == options.followers
    big = report.big
    assert big.zadds == 0
    assert big.scripts <= 1  # the author's own timeline, which does not exist
    assert big.merged_on_read
    for result in (big.without, big.with_big):
        assert result.errors == {}
        assert result.succeeded == result.scheduled > 0

    console = Console(width=220, record=True)
    for table in tables(report, options):
        console.print(table)
    text = console.export_text()
    assert "12 active followers" in text
    assert "big author followed" in text
