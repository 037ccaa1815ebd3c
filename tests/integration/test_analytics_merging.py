"""Merged reads on the session's chdb: BatchGetPostMetrics calls of one tenant within the
window share one ClickHouse query and each gets its own posts back; one caller's
deadline does not cut the others'; tenants never share a query."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from services.analytics import repository
from services.analytics.merging import MergedReads
from services.analytics.repository import Metrics
from services.analytics.rows import IMPRESSIONS, ImpressionRow, encode_impressions
from services.runtime.clickhouse import ClickHouse
from services.runtime.spec import Dependencies


@pytest.fixture
def clickhouse(deps: Dependencies) -> ClickHouse:
    assert deps.clickhouse is not None
    return deps.clickhouse


class CountedReads:
    """The real read, with the queries it made."""

    def __init__(self, clickhouse: ClickHouse) -> None:
        self.clickhouse = clickhouse
        self.queries: list[tuple[uuid.UUID, list[uuid.UUID]]] = []

    async def __call__(
        self, tenant: uuid.UUID, ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, Metrics]:
        self.queries.append((tenant, list(ids)))
        return await repository.post_metrics(self.clickhouse, tenant, ids)


async def _views(clickhouse: ClickHouse, tenant: uuid.UUID, views: dict[uuid.UUID, int]) -> None:
    rows = [
        ImpressionRow(tenant, uuid.uuid4(), post, datetime.now(UTC), 0)
        for post, count in views.items()
        for _ in range(count)
    ]
    await clickhouse.insert(
        f"{clickhouse.database}.{IMPRESSIONS.table}",
        IMPRESSIONS.columns,
        encode_impressions(rows),
        {},
    )


async def test_two_callers_in_one_window_share_one_query_and_get_their_own_posts(
    clickhouse: ClickHouse,
) -> None:
    tenant = uuid.uuid4()
    a, b, shared = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await _views(clickhouse, tenant, {a: 2, b: 3, shared: 1})
    reads = CountedReads(clickhouse)
    merged = MergedReads(reads, window_seconds=0.05)
    first, second = await asyncio.gather(merged.get(tenant, [a, shared]), merged.get(tenant, [b]))
    assert len(reads.queries) == 1
    assert set(reads.queries[0][1]) == {a, b, shared}
    assert {k: v.views for k, v in first.items()} == {a: 2, shared: 1}
    assert {k: v.views for k, v in second.items()} == {b: 3}


async def test_one_callers_deadline_does_not_cut_the_others(clickhouse: ClickHouse) -> None:
    tenant, post = uuid.uuid4(), uuid.uuid4()
    await _views(clickhouse, tenant, {post: 4})
    reads = CountedReads(clickhouse)
    merged = MergedReads(reads, window_seconds=0.2)
    impatient = asyncio.create_task(asyncio.wait_for(merged.get(tenant, [post]), 0.02))
    patient = asyncio.create_task(merged.get(tenant, [post]))
    with pytest.raises(TimeoutError):
        await impatient
    answer = await patient
    assert answer[post].views == 4
    assert len(reads.queries) == 1


async def test_tenants_do_not_share_a_query_and_a_full_window_starts_another(
    clickhouse: ClickHouse,
) -> None:
    reads = CountedReads(clickhouse)
    merged = MergedReads(reads, window_seconds=0.05, max_ids=150)
    one, other = uuid.uuid4(), uuid.uuid4()
    await asyncio.gather(
        merged.get(one, [uuid.uuid4() for _ in range(100)]),
        merged.get(one, [uuid.uuid4() for _ in range(100)]),
        merged.get(other, [uuid.uuid4()]),
    )
    assert sorted((tenant == one, len(ids)) for tenant, ids in reads.queries) == [
        (False, 1),
        (True, 100),
        (True, 100),
    ]


async def test_without_a_window_every_call_is_its_own_query(clickhouse: ClickHouse) -> None:
    reads = CountedReads(clickhouse)
    merged = MergedReads(reads, window_seconds=0)
    tenant = uuid.uuid4()
    await asyncio.gather(*(merged.get(tenant, [uuid.uuid4()]) for _ in range(5)))
    assert len(reads.queries) == 5
