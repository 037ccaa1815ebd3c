"""`./dev bench analytics`: the insert batcher and merged reads, each beside its baseline
in one run.

- Ingest: RecordImpressions calls of 1,000 impressions at a fixed rate into an analytics
  server process (the real path: gRPC, the PostgreSQL journal, the batcher, chdb), against
  the same rows inserted into chdb row by row, one INSERT each (the plan's "10,000+ small
  queries"; in a process of its own too, with no gRPC or journal in its way). Rows a second
  that reached ClickHouse, inserts a second a table, rows an insert, active parts after.
- Reads: the same open-loop BatchGetPostMetrics load (20 ids a call) on a server that
  merges calls within 2 ms and one that does not: ClickHouse queries a second, p50/p99,
  the server's CPU a call.
- RecordImpressions p99 at a fixed rate of small calls.

The load generator is this process; each server is another (harness.server_process), so
its CPU is its own. PostgreSQL is NOVA_DATABASE_URL's, else an embedded one.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import click
from grpc import aio
from rich.table import Table

from nova.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from services.analytics import repository
from services.analytics.batcher import Batcher
from services.analytics.merging import MergedReads
from services.analytics.rows import IMPRESSIONS, ImpressionRow, encode_impressions
from services.analytics.service import SPEC
from services.analytics.servicer import AnalyticsServicer
from services.cli.common import load_config
from services.runtime.analytics_settings import AnalyticsSettings
from services.runtime.auth import Caller
from services.runtime.clickhouse import open_clickhouse
from services.runtime.clickhouse_migrations import migrate_clickhouse
from services.runtime.db import open_database
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.migrations import migrate
from services.runtime.process import database_url
from services.runtime.rate_limit import Rate
from services.runtime.server_layers import DEFAULT_LAYERS
from services.runtime.validation import validated
from tests.bench.harness import (
    BENCH_TOKENS,
    LOAD_COLUMNS,
    BenchError,
    ServerProcess,
    bench_server,
    console,
    error_counts,
    load_cells,
    run,
    serve_until_terminated,
    server_process,
)
from tests.bench.loadgen import Load, LoadResult, generate

ASK = "counters"
TENANT = DEFAULT_TENANT_ID
"""The bench's servers know no registry (bench_server): the default tenant is theirs."""
POSTS = 2000
METRICS_IDS = 20
"""Post ids a BatchGetPostMetrics call of the reads asks for (a feed page's)."""


@dataclass(frozen=True)
class Job:
    dsn: str
    chdb_path: Path
    analytics: AnalyticsSettings


@dataclass(frozen=True)
class Counters:
    inserts: dict[str, int]
    rows: dict[str, int]
    metrics_queries: int
    active_parts: dict[str, int]
    backlog_rows: int


# The server process


def serve_analytics(job: Job, connection: Connection) -> None:
    """An analytics server process (harness.server_process's target): the service as
    service.py wires it, on chdb at job.chdb_path; answers each ASK with Counters."""
    serve_until_terminated(connection.send, lambda: _serving(job, connection))


@contextlib.asynccontextmanager
async def _serving(job: Job, connection: Connection) -> AsyncIterator[int]:
    settings = job.analytics
    async with (
        open_database(job.dsn, size=10, acquire_timeout_ms=2000) as db,
        open_clickhouse(None, job.chdb_path, settings.database) as clickhouse,
    ):
        batcher = Batcher(db, clickhouse, settings)
        queries = [0]

        async def read(tenant: uuid.UUID, ids: Any) -> dict[uuid.UUID, repository.Metrics]:
            queries[0] += 1
            return await repository.post_metrics(clickhouse, tenant, ids)

        reads = MergedReads(read, settings.merge_window_seconds)
        server = bench_server(DEFAULT_LAYERS)
        analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(
            validated(AnalyticsServicer(db, clickhouse, batcher, reads), SPEC.service), server
        )
        port = server.add_insecure_port("127.0.0.1:0")
        batcher.start()
        await server.start()
        loop = asyncio.get_running_loop()
        fd = connection.fileno()
        answering: set[asyncio.Task[None]] = set()

        async def answer() -> None:
            rows = await clickhouse.query(
                "SELECT table, toInt64(count()) FROM system.parts "
                "WHERE active AND database = {db:String} GROUP BY table",
                {"db": clickhouse.database},
            )
            connection.send(
                Counters(
                    inserts={name: s.inserts for name, s in batcher.stats.items()},
                    rows={name: s.rows for name, s in batcher.stats.items()},
                    metrics_queries=queries[0],
                    active_parts={str(t): int(n) for t, n in rows},
                    backlog_rows=batcher.backlog_rows(IMPRESSIONS.table),
                )
            )

        def asked() -> None:
            try:
                connection.recv()
            except (EOFError, OSError):
                loop.remove_reader(fd)
                return
            task = loop.create_task(answer())
            answering.add(task)
            task.add_done_callback(answering.discard)

        loop.add_reader(fd, asked)
        try:
            yield port
        finally:
            loop.remove_reader(fd)
            await server.stop(5)
            await reads.close()
            await batcher.close()


async def ask(server: ServerProcess) -> Counters:
    control = server.control
    assert control is not None
    control.send(ASK)
    if not await asyncio.to_thread(control.poll, 30):
        raise BenchError("the analytics server did not answer within 30 s")
    counters = control.recv()
    if not isinstance(counters, Counters):
        raise BenchError(f"the analytics server answered {counters!r}")
    return counters


# The row-by-row baseline's process


@dataclass(frozen=True)
class RowByRow:
    chdb_path: Path
    database: str
    rows: int
    seconds: float


def insert_row_by_row(job: RowByRow, connection: Connection) -> None:
    """Inserts job.rows impressions one INSERT each (or for job.seconds, whichever ends
    first) and sends (rows, seconds, active parts)."""

    async def main() -> None:
        async with open_clickhouse(None, job.chdb_path, job.database) as clickhouse:
            assert SPEC.clickhouse_migrations is not None
            await migrate_clickhouse(clickhouse, SPEC.clickhouse_migrations)
            table = f"{clickhouse.database}.{IMPRESSIONS.table}"
            posts = [uuid.uuid4() for _ in range(POSTS)]
            started = time.perf_counter()
            done = 0
            while done < job.rows and time.perf_counter() - started < job.seconds:
                row = ImpressionRow(TENANT, uuid.uuid4(), posts[done % POSTS], datetime.now(UTC), 1)
                await clickhouse.insert(table, IMPRESSIONS.columns, encode_impressions([row]), {})
                done += 1
            elapsed = time.perf_counter() - started
            parts = await clickhouse.query(
                "SELECT toInt64(count()) FROM system.parts WHERE active AND database = "
                "{db:String} AND table = 'impressions'",
                {"db": clickhouse.database},
            )
            connection.send((done, elapsed, int(parts[0][0])))

    asyncio.run(main())


@contextlib.asynccontextmanager
async def _process_of(target: Callable[[Any, Connection], None], job: Any) -> AsyncIterator[Any]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=target, args=(job, theirs), daemon=True)
    process.start()
    theirs.close()
    try:
        if not await asyncio.to_thread(ours.poll, job.seconds + 60):
            raise BenchError("the row-by-row process did not finish")
        yield ours.recv()
    finally:
        process.join(10)
        ours.close()


# The bench


@dataclass(frozen=True)
class AnalyticsBench:
    ingest_rate: float
    """RecordImpressions calls of 1,000 a second in the ingest run."""
    duration: float
    reads_rates: tuple[float, ...]
    """Each is offered to both servers: one they both keep up with, one past unmerged."""
    impressions_rate: float


@dataclass(frozen=True)
class IngestRow:
    name: str
    rows: int
    seconds: float
    inserts: int
    parts: int
    load: LoadResult | None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class ReadRow:
    name: str
    load: LoadResult
    queries: int
    cpu_seconds: float
    seconds: float


def _metadata() -> tuple[tuple[str, str], ...]:
    token, _ = BENCH_TOKENS.issue(Caller(user_id=uuid.uuid4(), tenant_id=TENANT, handle="bench"))
    return (("authorization", f"Bearer {token}"),)


async def _ingest(server: ServerProcess, options: AnalyticsBench, posts: list[str]) -> IngestRow:
    metadata = _metadata()
    request = analytics_pb2.RecordImpressionsRequest(
        impressions=[
            analytics_pb2.Impression(post_id=posts[i % POSTS], dwell_ms=5) for i in range(1000)
        ]
    )
    async with aio.insecure_channel(server.address) as channel:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)

        async def call() -> None:
            await stub.RecordImpressions(request, metadata=metadata, timeout=10)

        before = await ask(server)
        started = time.perf_counter()
        load = Load(options.ingest_rate, options.duration, 0, max_outstanding=64)
        result = await generate(call, load)
        accepted = result.succeeded * 1000
        # Until everything accepted is in ClickHouse.
        for _ in range(600):
            after = await ask(server)
            written = after.rows[IMPRESSIONS.table] - before.rows[IMPRESSIONS.table]
            if written >= accepted:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    return IngestRow(
        "batched (journal + batcher)",
        rows=written,
        seconds=elapsed,
        inserts=after.inserts[IMPRESSIONS.table] - before.inserts[IMPRESSIONS.table],
        parts=after.active_parts.get(IMPRESSIONS.table, 0),
        load=result,
    )


async def _reads(
    server: ServerProcess, name: str, rate: float, duration: float, posts: list[str]
) -> ReadRow:
    metadata = _metadata()
    rng = random.Random(3)
    async with aio.insecure_channel(server.address) as channel:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)

        async def call() -> None:
            ids = rng.sample(posts, METRICS_IDS)
            await stub.BatchGetPostMetrics(
                analytics_pb2.BatchGetPostMetricsRequest(post_ids=ids),
                metadata=metadata,
                timeout=10,
            )

        await generate(call, Load(rate, 1.0, 0, max_outstanding=256))  # warm-up
        before, cpu = await ask(server), server.cpu_seconds()
        result = await generate(call, Load(rate, duration, 0, max_outstanding=256))
        after = await ask(server)
        used = server.cpu_seconds() - cpu
    return ReadRow(name, result, after.metrics_queries - before.metrics_queries, used, duration)


async def _impressions_p99(
    server: ServerProcess, options: AnalyticsBench, posts: list[str]
) -> LoadResult:
    metadata = _metadata()
    rng = random.Random(4)
    async with aio.insecure_channel(server.address) as channel:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)

        async def call() -> None:
            request = analytics_pb2.RecordImpressionsRequest(
                impressions=[
                    analytics_pb2.Impression(post_id=p, dwell_ms=900) for p in rng.sample(posts, 20)
                ]
            )
            await stub.RecordImpressions(request, metadata=metadata, timeout=10)

        return await generate(call, Load(options.impressions_rate, options.duration, 1.0, 128))


async def bench_analytics(options: AnalyticsBench) -> None:
    out = console()
    config = load_config()
    posts = [str(uuid.uuid4()) for _ in range(POSTS)]
    with tempfile.TemporaryDirectory(prefix="nova-bench-analytics-") as folder:
        async with database_url(replace(config, data_dir=Path(folder))) as dsn:
            async with (
                open_database(dsn, size=2, acquire_timeout_ms=10_000) as db,
                db.connection() as conn,
            ):
                await migrate(conn, schema=SPEC.schema, directory=SPEC.migrations)
            chdb = Path(folder) / "clickhouse"
            database = f"bench_{uuid.uuid4().hex[:6]}"
            async with open_clickhouse(None, chdb, database) as clickhouse:
                assert SPEC.clickhouse_migrations is not None
                await migrate_clickhouse(clickhouse, SPEC.clickhouse_migrations)
            # One bench user sends every call: no per-user limit to measure.
            unlimited = Rate(per_minute=100_000_000, burst=100_000_000)
            base = replace(config.analytics, database=database, impression_calls=unlimited)
            job = Job(dsn, chdb, base)
            out.print(f"bench: ingest, {options.ingest_rate:g} calls of 1,000 impressions a second")
            async with server_process(serve_analytics, job) as server:
                batched = await _ingest(server, options, posts)
                out.print(
                    f"bench: RecordImpressions, {options.impressions_rate:g} calls of 20 a second"
                )
                impressions = await _impressions_p99(server, options, posts)
                merged = []
                for rate in options.reads_rates:
                    out.print(f"bench: reads merged, {rate:g} calls a second")
                    merged.append(
                        await _reads(server, "merged (2 ms)", rate, options.duration, posts)
                    )
            unmerged_job = Job(dsn, chdb, replace(base, merge_window_seconds=0))
            async with server_process(serve_analytics, unmerged_job) as server:
                unmerged = []
                for rate in options.reads_rates:
                    out.print(f"bench: reads unmerged, {rate:g} calls a second")
                    unmerged.append(await _reads(server, "unmerged", rate, options.duration, posts))
            out.print("bench: ingest row by row")
            baseline_job = RowByRow(Path(folder) / "rows", "rows", batched.rows, options.duration)
            async with _process_of(insert_row_by_row, baseline_job) as (rows, seconds, parts):
                row_by_row = IngestRow(
                    "row by row (one INSERT a row)", rows, seconds, rows, parts, None
                )
    out.print(_ingest_table(batched, row_by_row))
    for pair in zip(merged, unmerged, strict=True):
        out.print(_reads_table(*pair))
    out.print(_impressions_table(impressions))


def _ingest_table(batched: IngestRow, row_by_row: IngestRow) -> Table:
    table = Table(title="Ingest into chdb: impressions table")
    for column in (
        "variant",
        "rows",
        "seconds",
        "rows/s",
        "inserts",
        "inserts/s",
        "rows/insert",
        "active parts",
        "calls p50 ms",
        "calls p99 ms",
        "errors",
    ):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for row in (batched, row_by_row):
        table.add_row(
            row.name,
            f"{row.rows}",
            f"{row.seconds:.1f}",
            f"{row.rows_per_second:,.0f}",
            f"{row.inserts}",
            f"{row.inserts / row.seconds:.2f}" if row.seconds else "-",
            f"{row.rows / row.inserts:,.0f}" if row.inserts else "-",
            f"{row.parts}",
            f"{row.load.p50_ms:.1f}" if row.load else "-",
            f"{row.load.p99_ms:.1f}" if row.load else "-",
            error_counts(row.load.errors) if row.load else "-",
        )
    ratio = (
        batched.rows_per_second / row_by_row.rows_per_second if row_by_row.rows_per_second else 0
    )
    table.caption = f"batched / row by row: {ratio:.0f}x the rows a second"
    return table


def _reads_table(merged: ReadRow, unmerged: ReadRow) -> Table:
    rate = f"{merged.load.offered_rate:g}"
    table = Table(title=f"BatchGetPostMetrics, 20 ids a call, open loop at {rate}/s")
    for column in (
        "variant",
        *LOAD_COLUMNS,
        "errors",
        "ClickHouse queries/s",
        "calls/query",
        "server CPU ms/call",
    ):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for row in (merged, unmerged):
        calls = max(1, row.load.succeeded)
        table.add_row(
            row.name,
            *load_cells(row.load),
            error_counts(row.load.errors),
            f"{row.queries / row.seconds:,.0f}",
            f"{calls / max(1, row.queries):.1f}",
            f"{row.cpu_seconds * 1000 / calls:.2f}",
        )
    per_call = [row.cpu_seconds / max(1, row.load.succeeded) for row in (merged, unmerged)]
    if unmerged.queries and per_call[1]:
        table.caption = (
            f"merged / unmerged: {merged.queries / unmerged.queries:.2f}x the queries, "
            f"{per_call[0] / per_call[1]:.2f}x the server CPU a call"
        )
    return table


def _impressions_table(result: LoadResult) -> Table:
    table = Table(title="RecordImpressions, 20 impressions a call, open loop")
    for column in (*LOAD_COLUMNS, "errors"):
        table.add_column(column, justify="right")
    table.add_row(*load_cells(result), error_counts(result.errors))
    return table


@click.command("analytics")
@click.option(
    "--ingest-rate",
    default=60.0,
    show_default=True,
    help="RecordImpressions calls of 1,000 a second",
)
@click.option(
    "--reads-rate",
    "reads_rates",
    default=(250.0, 1000.0),
    multiple=True,
    show_default=True,
    help="BatchGetPostMetrics calls a second (repeat for several)",
)
@click.option(
    "--impressions-rate",
    default=200.0,
    show_default=True,
    help="RecordImpressions calls of 20 a second",
)
@click.option("--duration", default=10.0, show_default=True, help="seconds each run is measured")
def command(
    ingest_rate: float, reads_rates: tuple[float, ...], impressions_rate: float, duration: float
) -> None:
    """The insert batcher against row-by-row inserts, merged reads against unmerged, and
    RecordImpressions at a fixed rate."""
    run(bench_analytics(AnalyticsBench(ingest_rate, duration, reads_rates, impressions_rate)))
