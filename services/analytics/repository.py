"""ClickHouse SQL of the analytics reads, over the materialized views' tables
(clickhouse/0002, 0003): a few pre-aggregated rows per post, minute or hour, never a scan
of raw rows. Every read is of one tenant, the first column of every table's order."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from services.runtime.clickhouse import ClickHouse

VIEW_WEIGHT, LIKE_WEIGHT, COMMENT_WEIGHT = 1, 5, 10
"""Trending is engagement-weighted: a comment says more than a like, a like more than a
view."""


@dataclass(frozen=True, slots=True)
class Metrics:
    post_id: uuid.UUID
    views: int = 0
    likes: int = 0
    comments: int = 0


async def post_metrics(
    clickhouse: ClickHouse, tenant_id: uuid.UUID, post_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Metrics]:
    """Totals of the posts that have any (a post with none is not in the answer). One
    thread: a read of a few granules gains nothing from more, and each costs a start."""
    rows = await clickhouse.query(
        f"""SELECT post_id, sum(views), sum(likes), sum(comments)
              FROM {clickhouse.database}.post_totals
             WHERE tenant_id = {{tenant:UUID}} AND post_id IN {{ids:Array(UUID)}}
             GROUP BY post_id
          SETTINGS max_threads = 1""",
        {"tenant": tenant_id, "ids": list(post_ids)},
    )
    return {row[0]: Metrics(row[0], int(row[1]), int(row[2]), int(row[3])) for row in rows}


async def trending_posts(
    clickhouse: ClickHouse, tenant_id: uuid.UUID, window_seconds: int, limit: int
) -> list[Metrics]:
    """The posts with the most weighted engagement in the window (counted by the minute:
    the window starts at the minute `window_seconds` ago falls in), with what they had in
    it; ties go to the newer id."""
    rows = await clickhouse.query(
        f"""SELECT post_id, sum(views) AS v, sum(likes) AS l, sum(comments) AS c
              FROM {clickhouse.database}.post_minutes
             WHERE tenant_id = {{tenant:UUID}}
               AND minute >= toStartOfMinute(now() - {{window:UInt32}})
             GROUP BY post_id
            HAVING v + l + c > 0
             ORDER BY v * {VIEW_WEIGHT} + l * {LIKE_WEIGHT} + c * {COMMENT_WEIGHT} DESC,
                      post_id DESC
             LIMIT {{limit:UInt32}}""",
        {"tenant": tenant_id, "window": window_seconds, "limit": limit},
    )
    return [Metrics(row[0], int(row[1]), int(row[2]), int(row[3])) for row in rows]


async def active_users(clickhouse: ClickHouse, tenant_id: uuid.UUID, window_seconds: int) -> int:
    """Distinct users who acted or viewed in the window, counted by the hour (the window
    starts at the hour `window_seconds` ago falls in)."""
    rows = await clickhouse.query(
        f"""SELECT uniqMerge(users) FROM {clickhouse.database}.active_users_hourly
             WHERE tenant_id = {{tenant:UUID}}
               AND hour >= toStartOfHour(now() - {{window:UInt32}})""",
        {"tenant": tenant_id, "window": window_seconds},
    )
    return int(rows[0][0]) if rows else 0
