"""`./dev bench analytics` runs briefly, as a subprocess on a database of its own: every
table prints, every impression it sent reached ClickHouse in batches, and the row-by-row
baseline made one insert a row."""

from __future__ import annotations

from pathlib import Path

from tests.bench_runs import run_bench, table_cells
from tests.conftest import fresh_database


async def test_bench_analytics_prints_ingest_reads_and_impressions(
    server_url: str, tmp_path: Path
) -> None:
    arguments = ["--duration", "1", "--ingest-rate", "5", "--reads-rate", "40"]
    arguments += ["--impressions-rate", "20"]
    async with fresh_database(server_url, "benchanalytics") as url:
        done = await run_bench(
            "analytics", arguments, database_url=url, data_dir=tmp_path, seconds=180
        )
    assert done.returncode == 0, done.stderr[-3000:]
    rows, _, _, inserts, *_ = table_cells(done.stdout, "batched (journal + batcher)")
    assert rows == "5000", "5 calls of 1,000 impressions, all written"
    assert int(inserts) <= 3, "in a few large inserts, not 5,000 small ones"
    baseline_rows, _, _, baseline_inserts, *_ = table_cells(
        done.stdout, "row by row (one INSERT a row)"
    )
    assert baseline_rows == baseline_inserts
    merged = table_cells(done.stdout, "merged (2 ms)")
    assert merged[0] == "40"
    assert "open loop at 40/s" in done.stdout
    assert "RecordImpressions, 20 impressions a call" in done.stdout
