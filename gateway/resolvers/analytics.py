"""trendingPosts and recordImpressions: the fields that stand in for the analytics
service (Post.viewCount is with the other Post fields, through the `metrics` loader).

Their arguments are checked here against the limits analytics.proto states, so a bad one
is a BAD_USER_INPUT that names the GraphQL argument, and costs no RPC.
"""

import asyncio

from ariadne import MutationType, QueryType

from gateway.context import Info
from gateway.errors import BadUserInput, NotFound
from gateway.loaders import canonical_id
from nova.analytics.v1 import analytics_pb2
from nova.content.v1 import content_pb2

MAX_WINDOW_SECONDS = 7 * 24 * 3600
"""GetTrendingPosts looks back at most 7 days."""
MAX_IMPRESSIONS = 1000
"""RecordImpressions takes 1 to 1000 impressions per call."""
MAX_DWELL_MS = 3_600_000
"""The service refuses a dwell over an hour on one post (a client's bug, not a view)."""
TRENDING_WORK = 500
"""What one trendingPosts costs the backends beyond the posts it returns, in the cost
model's unit (gateway.limits): its RPC, a GROUP BY over the per-minute rows of every post
seen in the window, whose size the gateway cannot bound (it grows with the window and with
activity). Priced so that a query may ask for the few windows an app shows side by side
(three of 20 posts each fit the default maxCost), not maxAliases of them."""

analytics_query = QueryType()
analytics_mutation = MutationType()


@analytics_query.field("trendingPosts")
async def resolve_trending_posts(
    _: None, info: Info, window_seconds: int, first: int
) -> list[content_pb2.Post]:
    # `first` was checked against max_page_size, GetTrendingPosts' maximum too, before
    # execution (limits). A window of 0 would mean the service's default: the schema's is
    # explicit, so 0 is refused with the negative ones.
    if not 1 <= window_seconds <= MAX_WINDOW_SECONDS:
        raise BadUserInput(
            f"windowSeconds must be 1 to {MAX_WINDOW_SECONDS} (7 days), got {window_seconds}"
        )
    context = info.context
    backend = context.backend
    response = await backend.call(
        backend.analytics.GetTrendingPosts,
        analytics_pb2.GetTrendingPostsRequest(window_seconds=window_seconds, limit=first),
    )
    loaders = context.loaders
    # Not primed into viewCount: the answer's views are the window's, viewCount the total.
    found = await asyncio.gather(
        *(loaders.posts.load(metrics.post_id) for metrics in response.posts),
        return_exceptions=True,
    )
    posts: list[content_pb2.Post] = []
    for post in found:
        if isinstance(post, content_pb2.Post):
            posts.append(post)
        elif not isinstance(post, NotFound):
            raise post
        # NotFound: deleted since it was seen; its impressions still count in ClickHouse.
    return posts


@analytics_mutation.field("recordImpressions")
async def resolve_record_impressions(
    _: None, info: Info, post_ids: list[str], dwell_ms: int
) -> dict[str, int]:
    context = info.context
    context.require_viewer()
    # Counted before any id is read, so an oversized list costs no more than its length.
    if not 1 <= len(post_ids) <= MAX_IMPRESSIONS:
        raise BadUserInput(
            f"postIds lists {len(post_ids)} posts; send 1 to {MAX_IMPRESSIONS} in one call"
        )
    if not 0 <= dwell_ms <= MAX_DWELL_MS:
        raise BadUserInput(f"dwellMs must be 0 to {MAX_DWELL_MS} (an hour), got {dwell_ms}")
    backend = context.backend
    # No viewed_at: the service stamps the impressions with its own clock.
    response = await backend.call(
        backend.analytics.RecordImpressions,
        analytics_pb2.RecordImpressionsRequest(
            impressions=[
                analytics_pb2.Impression(
                    post_id=canonical_id(post_id, "postIds"), dwell_ms=dwell_ms
                )
                for post_id in post_ids
            ]
        ),
    )
    return {"accepted": response.accepted}
