"""The insert batcher on a database of its own and a ClickHouse database of its own (in the
session's chdb engine): batches cut at the row bound and written at the interval, a
batch a dead flusher inserted is not inserted twice, a full backlog refuses impressions
with a retry hint, and what waits is written at shutdown."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import cast

import grpc
import pytest
from grpc import aio

from interceptors.context import PUSHBACK_KEY
from nova.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from services.analytics import journal
from services.analytics.batcher import Batcher
from services.analytics.rows import IMPRESSIONS, ImpressionRow, encode_impressions
from services.analytics.service import SPEC
from services.runtime.auth import Caller
from services.runtime.clickhouse import ClickHouse, open_clickhouse
from services.runtime.clickhouse_migrations import migrate_clickhouse
from services.runtime.db import Database, open_database
from services.runtime.migrations import migrate
from services.runtime.rate_limit import Rate
from services.runtime.server import start_server
from services.runtime.spec import Dependencies
from tests.conftest import NewTenant, fresh_database


@asynccontextmanager
async def _empty_stores(
    server_url: str, deps: Dependencies, *, journal: bool = True
) -> AsyncIterator[tuple[Database, ClickHouse]]:
    """A database of its own (with the journal migrated unless `journal` is False) and a
    ClickHouse database of its own with analytics' tables, in the session's chdb path (a
    process opens one), dropped afterwards."""
    chdb = deps.config.analytics.chdb_path
    assert chdb is not None
    assert SPEC.clickhouse_migrations is not None
    name = f"batcher_{uuid.uuid4().hex[:8]}"
    async with (
        fresh_database(server_url, "nova_batcher") as url,
        open_database(url, size=6, acquire_timeout_ms=5000) as db,
        open_clickhouse(None, chdb, name) as ch,
    ):
        if journal:
            async with db.connection() as conn:
                await migrate(conn, schema=SPEC.schema, directory=SPEC.migrations)
        await migrate_clickhouse(ch, SPEC.clickhouse_migrations)
        try:
            yield db, ch
        finally:
            await ch.command(f"DROP DATABASE {name}")


@pytest.fixture
async def stores(server_url: str, deps: Dependencies) -> AsyncIterator[tuple[Database, ClickHouse]]:
    """An empty journal and empty ClickHouse tables."""
    async with _empty_stores(server_url, deps) as opened:
        yield opened


async def _stage(db: Database, rows: int, post: uuid.UUID, tenant: uuid.UUID) -> None:
    row = ImpressionRow(tenant, uuid.uuid4(), post, datetime.now(UTC), 10)
    async with db.connection() as conn:
        await journal.stage(conn, IMPRESSIONS.table, rows, encode_impressions([row] * rows))


async def _counts(ch: ClickHouse) -> tuple[int, int]:
    """Raw impression rows, and views in the per-post totals (the materialized view)."""
    [(raw,)] = await ch.query(f"SELECT count() FROM {ch.database}.impressions")
    [(views,)] = await ch.query(f"SELECT sum(views) FROM {ch.database}.post_totals")
    return int(raw), int(views)


async def _until(ch: ClickHouse, expected: tuple[int, int], seconds: float = 10) -> tuple[int, int]:
    seen = (0, 0)
    for _ in range(int(seconds / 0.05)):
        seen = await _counts(ch)
        if seen == expected:
            return seen
        await asyncio.sleep(0.05)
    return seen


async def _waiting_rows(db: Database) -> int:
    return (await journal.waiting(db, IMPRESSIONS.table)).rows


async def test_a_batch_is_cut_at_the_row_bound_and_the_rest_waits_for_the_interval(
    stores: tuple[Database, ClickHouse], deps: Dependencies
) -> None:
    db, ch = stores
    settings = replace(deps.config.analytics, flush_rows=100, flush_interval_seconds=60)
    batcher = Batcher(db, ch, settings)
    batcher.start()
    post, tenant = uuid.uuid4(), uuid.uuid4()
    for _ in range(15):
        await _stage(db, 10, post, tenant)
    batcher.staged(IMPRESSIONS.table, 150)
    try:
        assert await _until(ch, (100, 100)) == (100, 100), "one full batch, at once"
        await asyncio.sleep(0.5)
        assert await _counts(ch) == (100, 100), "50 rows are no batch, and 60 s have not passed"
        assert await _waiting_rows(db) == 50
        assert batcher.stats[IMPRESSIONS.table].inserts == 1
    finally:
        await batcher.close()
    assert await _counts(ch) == (150, 150), "closing writes what waits"
    assert await _waiting_rows(db) == 0
    assert batcher.stats[IMPRESSIONS.table].inserts == 2


async def test_rows_are_written_once_the_oldest_has_waited_the_interval(
    stores: tuple[Database, ClickHouse], deps: Dependencies
) -> None:
    db, ch = stores
    settings = replace(deps.config.analytics, flush_rows=1_000_000, flush_interval_seconds=0.3)
    batcher = Batcher(db, ch, settings)
    batcher.start()
    try:
        await _stage(db, 7, uuid.uuid4(), uuid.uuid4())
        assert await _until(ch, (7, 7), seconds=5) == (7, 7)
    finally:
        await batcher.close()


async def test_a_batch_a_dead_flusher_inserted_is_not_inserted_again(
    stores: tuple[Database, ClickHouse], deps: Dependencies
) -> None:
    """The flusher's worst moment: the batch is in ClickHouse but still in the journal. The
    next flusher inserts it again with the same token, and ClickHouse (table and
    materialized views) keeps one copy."""
    db, ch = stores
    post, tenant = uuid.uuid4(), uuid.uuid4()
    await _stage(db, 30, post, tenant)
    await _stage(db, 20, post, tenant)
    batch_id = await journal.claim(db, IMPRESSIONS.table, max_rows=1000, max_bytes=1 << 20)
    assert batch_id is not None
    batch = await journal.read_batch(db, IMPRESSIONS.table, batch_id)
    assert batch is not None
    assert batch.rows == 50
    # What the dying flusher did before it died: the insert, with its token.
    token = f"{await journal.journal_id(db)}-{IMPRESSIONS.table}-{batch_id}"
    await ch.insert(
        f"{ch.database}.{IMPRESSIONS.table}",
        IMPRESSIONS.columns,
        batch.payload,
        {
            "insert_deduplication_token": token,
            "deduplicate_blocks_in_dependent_materialized_views": 1,
        },
    )
    assert await _counts(ch) == (50, 50)

    settings = replace(deps.config.analytics, flush_interval_seconds=0.1)
    batcher = Batcher(db, ch, settings)
    batcher.start()
    try:
        for _ in range(100):
            if await journal.read_batch(db, IMPRESSIONS.table, batch_id) is None:
                break
            await asyncio.sleep(0.05)
        assert await journal.read_batch(db, IMPRESSIONS.table, batch_id) is None, "written"
    finally:
        await batcher.close()
    assert await _counts(ch) == (50, 50), "the second insert was recognised and skipped"


async def test_a_full_backlog_refuses_impressions_with_a_retry_hint_and_shutdown_writes_it(
    stores: tuple[Database, ClickHouse], deps: Dependencies, new_tenant: NewTenant
) -> None:
    db, ch = stores
    analytics = replace(
        deps.config.analytics,
        max_backlog_rows=1000,
        flush_rows=1_000_000,
        flush_interval_seconds=60,
    )
    config = replace(deps.config, analytics=analytics, shutdown_grace_seconds=5)
    own = Dependencies(
        config=config, db=db, tokens=deps.tokens, clickhouse=ch, tenants=deps.tenants
    )
    running = await start_server(SPEC, own, host="127.0.0.1", port=0)
    caller = Caller(user_id=uuid.uuid4(), tenant_id=await new_tenant(), handle="backlog")
    token, _ = deps.tokens.issue(caller)
    metadata = (("authorization", f"Bearer {token}"),)
    post = str(uuid.uuid4())
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
            full = analytics_pb2.RecordImpressionsRequest(
                impressions=[analytics_pb2.Impression(post_id=post)] * 1000
            )
            assert (await stub.RecordImpressions(full, metadata=metadata)).accepted == 1000
            one_more = analytics_pb2.RecordImpressionsRequest(
                impressions=[analytics_pb2.Impression(post_id=post)]
            )
            with pytest.raises(aio.AioRpcError) as refused:
                await stub.RecordImpressions(one_more, metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "1000 impressions waiting to be written (at most 1000)" in (
                refused.value.details() or ""
            )
            trailers = dict(cast(aio.Metadata, refused.value.trailing_metadata()))
            assert int(trailers[PUSHBACK_KEY]) >= 1000, "retry in a second or more"
            assert await _counts(ch) == (0, 0), "nothing was due yet"
    finally:
        await running.stop(5)
    assert await _counts(ch) == (1000, 1000), "the server's shutdown wrote the backlog"
    assert await _waiting_rows(db) == 0


async def test_one_user_sending_too_often_is_refused_and_others_are_not(
    stores: tuple[Database, ClickHouse], deps: Dependencies, new_tenant: NewTenant
) -> None:
    db, ch = stores
    analytics = replace(deps.config.analytics, impression_calls=Rate(per_minute=1, burst=2))
    own = Dependencies(
        config=replace(deps.config, analytics=analytics),
        db=db,
        tokens=deps.tokens,
        clickhouse=ch,
        tenants=deps.tenants,
    )
    running = await start_server(SPEC, own, host="127.0.0.1", port=0)
    tenant = await new_tenant()
    eager, other = (
        (("authorization", f"Bearer {deps.tokens.issue(Caller(uuid.uuid4(), tenant, h))[0]}"),)
        for h in ("eager", "other")
    )
    one = analytics_pb2.RecordImpressionsRequest(
        impressions=[analytics_pb2.Impression(post_id=str(uuid.uuid4()))]
    )
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
            for _ in range(2):
                await stub.RecordImpressions(one, metadata=eager)
            with pytest.raises(aio.AioRpcError) as refused:
                await stub.RecordImpressions(one, metadata=eager)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "more often than 1/min, bursts of 2" in (refused.value.details() or "")
            trailers = dict(cast(aio.Metadata, refused.value.trailing_metadata()))
            assert int(trailers[PUSHBACK_KEY]) > 1000
            assert (await stub.RecordImpressions(one, metadata=other)).accepted == 1
    finally:
        await running.stop(5)
    assert await _counts(ch) == (3, 3), "the refused call staged nothing"


async def test_a_batcher_started_before_its_journal_exists_waits_for_it(
    server_url: str, deps: Dependencies
) -> None:
    """The service may start while the journal is not there yet (its migration running
    elsewhere, the database failing over): the batcher retries instead of dying."""
    async with _empty_stores(server_url, deps, journal=False) as (db, ch):
        settings = replace(deps.config.analytics, flush_interval_seconds=0.2)
        batcher = Batcher(db, ch, settings)
        batcher.start()
        try:
            await asyncio.sleep(0.3)  # it tried, and found no journal
            async with db.connection() as conn:
                await migrate(conn, schema=SPEC.schema, directory=SPEC.migrations)
            await _stage(db, 5, uuid.uuid4(), uuid.uuid4())
            assert await _until(ch, (5, 5)) == (5, 5)
        finally:
            await batcher.close()
