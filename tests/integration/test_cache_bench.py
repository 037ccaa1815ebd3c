"""`./dev bench cache` runs end to end on a database of its own and reports what the cache
is for: one database load for many concurrent misses (one per call without it), and no
GetPreferences or BatchGetPosts statement once the caches are warm."""

from __future__ import annotations

from pathlib import Path

from tests.bench_runs import run_bench, table_cells
from tests.conftest import fresh_database


async def test_bench_cache_counts_one_load_for_concurrent_misses_and_none_when_warm(
    server_url: str, tmp_path: Path
) -> None:
    arguments = ["--users", "4", "--concurrent", "100", "--invalidations", "3"]
    async with fresh_database(server_url, "benchcache") as url:
        done = await run_bench("cache", arguments, database_url=url, data_dir=tmp_path, seconds=120)
    assert done.returncode == 0, done.stderr
    assert table_cells(done.stdout, "cache, tasks in this process") == ["100", "1", "0"]
    assert table_cells(done.stdout, "cache, GetPreferences RPCs") == ["100", "1", "0"]
    assert table_cells(done.stdout, "no cache, GetPreferences RPCs") == ["100", "100", "0"]
    assert table_cells(done.stdout, "GetPreferences") == ["1.00", "1.00", "0.00"]
    no_cache, _, warm = table_cells(done.stdout, "BatchGetPosts")
    # The posts come from the cache once warm; their stats and comments (one statement)
    # always from SQL.
    assert (no_cache, warm) == ("2.00", "1.00")
    for group in ("user-cache", "content-cache"):
        changes, *lags = table_cells(done.stdout, f"outbox, relay, log, {group} group")
        p50, p99, worst = map(float, lags)
        assert changes == "3"
        assert 0 < p50 <= p99 <= worst
