"""gRPC surface of nova.analytics.v1.AnalyticsService: validate, stage or read, build protos."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from grpc import aio

from nova.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from services.analytics import journal, repository
from services.analytics.batcher import Batcher
from services.analytics.merging import MergedReads
from services.analytics.rows import IMPRESSIONS, ImpressionRow, encode_impressions
from services.runtime.auth import require_caller
from services.runtime.clickhouse import ClickHouse
from services.runtime.db import Database
from services.runtime.errors import InvalidArgument, Refused
from services.runtime.rate_limit import RateLimiter
from services.runtime.tenancy.current import current_tenant
from services.runtime.validation import check_limit, parse_id, parse_ids

Context = aio.ServicerContext[Any, Any]

MAX_IMPRESSIONS = 1000
"""RecordImpressions takes at most this many per call (the proto documents it)."""
MAX_LIMITED_CALLERS = 100_000
"""Users whose RecordImpressions rate is kept at once (least recent forgotten first)."""
MAX_BATCH_GET_POST_METRICS = 100
MAX_DWELL_MS = 3_600_000
"""An hour on one post: longer is a client's bug, not a view."""
MAX_VIEW_AGE = timedelta(days=7)
"""Impressions older than this are refused (a client replaying a stale queue): the
trending windows would never count them."""
MAX_CLOCK_SKEW = timedelta(minutes=5)
DEFAULT_TRENDING_WINDOW, MAX_TRENDING_WINDOW = 3600, 7 * 86400
DEFAULT_TRENDING_LIMIT, MAX_TRENDING_LIMIT = 20, 100
DEFAULT_ACTIVE_WINDOW, MAX_ACTIVE_WINDOW = 86400, 30 * 86400


class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServiceServicer):
    def __init__(
        self, db: Database, clickhouse: ClickHouse, batcher: Batcher, reads: MergedReads
    ) -> None:
        self._db = db
        self._clickhouse = clickhouse
        self._batcher = batcher
        self._reads = reads
        self._callers = RateLimiter(batcher.settings.impression_calls, max_keys=MAX_LIMITED_CALLERS)

    async def RecordImpressions(
        self, request: analytics_pb2.RecordImpressionsRequest, context: Context
    ) -> analytics_pb2.RecordImpressionsResponse:
        caller = require_caller()
        wait = self._callers.try_acquire(str(caller.user_id))
        if wait > 0:
            raise Refused(
                f"this user sent RecordImpressions more often than "
                f"{self._callers.rate}; send what was seen in fewer, larger calls "
                f"(up to {MAX_IMPRESSIONS} each), next in {math.ceil(wait)} s",
                retry_after_seconds=wait,
                scope="caller",
            )
        count = len(request.impressions)
        if not 1 <= count <= MAX_IMPRESSIONS:
            raise InvalidArgument(f"impressions has {count}; send 1 to {MAX_IMPRESSIONS} a call")
        now = datetime.now(UTC)
        rows = [
            _impression(impression, f"impressions[{index}]", caller.tenant_id, caller.user_id, now)
            for index, impression in enumerate(request.impressions)
        ]
        settings = self._batcher.settings
        backlog = self._batcher.backlog_rows(IMPRESSIONS.table)
        if backlog + count > settings.max_backlog_rows:
            raise Refused(
                f"analytics has {backlog} impressions waiting to be written (at most "
                f"{settings.max_backlog_rows}); retry later",
                retry_after_seconds=max(1.0, settings.flush_interval_seconds * 2),
                scope="method",
            )
        async with self._db.connection() as conn:
            await journal.stage(conn, IMPRESSIONS.table, count, encode_impressions(rows))
        # Staged in PostgreSQL: accepted, and written to ClickHouse by the batcher.
        self._batcher.staged(IMPRESSIONS.table, count)
        return analytics_pb2.RecordImpressionsResponse(accepted=count)

    async def BatchGetPostMetrics(
        self, request: analytics_pb2.BatchGetPostMetricsRequest, context: Context
    ) -> analytics_pb2.BatchGetPostMetricsResponse:
        ids = parse_ids(request.post_ids, "post_ids", maximum=MAX_BATCH_GET_POST_METRICS)
        found = await self._reads.get(current_tenant(), ids)
        return analytics_pb2.BatchGetPostMetricsResponse(
            metrics=[_metrics_proto(found.get(i) or repository.Metrics(i)) for i in ids]
        )

    async def GetTrendingPosts(
        self, request: analytics_pb2.GetTrendingPostsRequest, context: Context
    ) -> analytics_pb2.GetTrendingPostsResponse:
        window = _window(request.window_seconds, DEFAULT_TRENDING_WINDOW, MAX_TRENDING_WINDOW)
        limit = check_limit(
            request.limit, "limit", default=DEFAULT_TRENDING_LIMIT, maximum=MAX_TRENDING_LIMIT
        )
        posts = await repository.trending_posts(self._clickhouse, current_tenant(), window, limit)
        return analytics_pb2.GetTrendingPostsResponse(posts=[_metrics_proto(p) for p in posts])

    async def GetActiveUsers(
        self, request: analytics_pb2.GetActiveUsersRequest, context: Context
    ) -> analytics_pb2.GetActiveUsersResponse:
        window = _window(request.window_seconds, DEFAULT_ACTIVE_WINDOW, MAX_ACTIVE_WINDOW)
        count = await repository.active_users(self._clickhouse, current_tenant(), window)
        return analytics_pb2.GetActiveUsersResponse(active_users=count)


def _impression(
    impression: analytics_pb2.Impression,
    field: str,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    now: datetime,
) -> ImpressionRow:
    post_id = parse_id(impression.post_id, f"{field}.post_id")
    if not 0 <= impression.dwell_ms <= MAX_DWELL_MS:
        raise InvalidArgument(
            f"{field}.dwell_ms is {impression.dwell_ms}; it must be 0 to {MAX_DWELL_MS}"
        )
    viewed_at = now
    if impression.HasField("viewed_at"):
        try:
            viewed_at = impression.viewed_at.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            raise InvalidArgument(
                f"{field}.viewed_at is not a valid timestamp (seconds "
                f"{impression.viewed_at.seconds}, nanos {impression.viewed_at.nanos})"
            ) from None
        if viewed_at > now + MAX_CLOCK_SKEW or viewed_at < now - MAX_VIEW_AGE:
            raise InvalidArgument(
                f"{field}.viewed_at is {viewed_at.isoformat()}; it must be within the last "
                f"{MAX_VIEW_AGE.days} days and not in the future (leave it unset for now)"
            )
    return ImpressionRow(tenant_id, user_id, post_id, viewed_at, impression.dwell_ms)


def _window(seconds: int, default: int, maximum: int) -> int:
    if seconds < 0:
        raise InvalidArgument(f"window_seconds must not be negative, got {seconds}")
    if seconds > maximum:
        raise InvalidArgument(f"window_seconds is {seconds}; at most {maximum} is allowed")
    return seconds or default


def _metrics_proto(metrics: repository.Metrics) -> analytics_pb2.PostMetrics:
    return analytics_pb2.PostMetrics(
        post_id=str(metrics.post_id),
        views=metrics.views,
        likes=metrics.likes,
        comments=metrics.comments,
    )
