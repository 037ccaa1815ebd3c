"""`./dev bench cache` runs end to end on a database of its own and reports what the cache
is for: one database load for many concurrent misses (one per call without it), and no
GetPreferences or BatchGetPosts statement once the caches are warm."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import fresh_database

REPOSITORY = Path(__file__).parents[2]


def _cells(stdout: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first`."""
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│┃").split("│")]
        if cells and cells[0] == first:
            return cells[1:]
    raise AssertionError(f"no row {first!r} in:\n{stdout}")


async def test_bench_cache_counts_one_load_for_concurrent_misses_and_none_when_warm(
    server_url: str, tmp_path: Path
) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("NOVA_") and key.lower() not in ("http_proxy", "https_proxy")
    }
    env["NOVA_DATA_DIR"] = str(tmp_path)
    arguments = ["--users", "4", "--concurrent", "100", "--invalidations", "3"]
    async with fresh_database(server_url, "benchcache") as url:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "tests.bench", "cache", *arguments],
            cwd=REPOSITORY,
            env={**env, "NOVA_DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert _cells(done.stdout, "cache, tasks in this process") == ["100", "1", "0"]
    assert _cells(done.stdout, "cache, GetPreferences RPCs") == ["100", "1", "0"]
    assert _cells(done.stdout, "no cache, GetPreferences RPCs") == ["100", "100", "0"]
    assert _cells(done.stdout, "GetPreferences") == ["1.00", "1.00", "0.00"]
    no_cache, _, warm = _cells(done.stdout, "BatchGetPosts")
    # The posts come from the cache once warm; their stats and comments (one statement)
    # always from SQL.
    assert (no_cache, warm) == ("2.00", "1.00")
    for group in ("user-cache", "content-cache"):
        changes, *lags = _cells(done.stdout, f"outbox, relay, log, {group} group")
        p50, p99, worst = map(float, lags)
        assert changes == "3"
        assert 0 < p50 <= p99 <= worst
