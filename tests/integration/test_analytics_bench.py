"""`./dev bench analytics` runs briefly, as a subprocess on a database of its own: every
table prints, every impression it sent reached ClickHouse in batches, and the row-by-row
baseline made one insert a row."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import fresh_database
from tests.integration.test_cache_bench import REPOSITORY, _cells


async def test_bench_analytics_prints_ingest_reads_and_impressions(
    server_url: str, tmp_path: Path
) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("NOVA_") and key.lower() not in ("http_proxy", "https_proxy")
    }
    env["NOVA_DATA_DIR"] = str(tmp_path)
    arguments = ["--duration", "1", "--ingest-rate", "5", "--reads-rate", "40"]
    async with fresh_database(server_url, "benchanalytics") as url:
        done = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "tests.bench",
                "analytics",
                *arguments,
                "--impressions-rate",
                "20",
            ],
            cwd=REPOSITORY,
            env={**env, "NOVA_DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    rows, _, _, inserts, *_ = _cells(done.stdout, "batched (journal + batcher)")
    assert rows == "5000", "5 calls of 1,000 impressions, all written"
    assert int(inserts) <= 3, "in a few large inserts, not 5,000 small ones"
    baseline_rows, _, _, baseline_inserts, *_ = _cells(done.stdout, "row by row (one INSERT a row)")
    assert baseline_rows == baseline_inserts
    merged = _cells(done.stdout, "merged (2 ms)")
    assert merged[0] == "40"
    assert "open loop at 40/s" in done.stdout
    assert "RecordImpressions, 20 impressions a call" in done.stdout
