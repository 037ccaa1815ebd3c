"""homeFeed: the page from FeedService.GetHomeFeed (post ids and a cursor from the
viewer's timeline), then one BatchGetPosts for the posts with the stats and comments the
query selects (lookahead.py), then one BatchGetUsers for their authors and commenters:
by the time the page's fields resolve, every value they ask for is there. Three RPCs per
page, whatever its size and however many people the viewer follows, and a fourth beside
BatchGetPosts, BatchGetPostMetrics, when the query asks for viewCount.
"""

from collections.abc import Sequence
from typing import Any

from ariadne import QueryType

from gateway import lookahead
from gateway.context import Info
from gateway.resolvers.connection import post_connection
from nova.common.v1 import page_pb2
from nova.content.v1 import content_pb2
from nova.feed.v1 import feed_pb2

PULL_AUTHORS = 1000
"""The followed authors FeedService reads at most when it serves a page from PostgreSQL
(the viewer's 1,000 most recent follows; feed.proto)."""
WORK = PULL_AUTHORS + 2
"""What one homeFeed can cost the backends beyond the posts it returns, in the cost
model's unit (gateway.limits): its two RPCs, and a page FeedService serves from
PostgreSQL (a missing timeline, or a page past its cap: one index descent per followed
author). Usually it is one Redis round trip, but a caller chooses its cursor, so the
limit is checked against the worst case."""

_STATS = ("likeCount", "commentCount", "viewerHasLiked")
"""The Post fields answered from PostStats."""

feed_query = QueryType()


@feed_query.field("homeFeed")
async def resolve_home_feed(
    _: None, info: Info, first: int, after: str | None = None
) -> dict[str, Any]:
    context = info.context
    context.require_viewer()
    backend = context.backend
    response = await backend.call(
        backend.feed.GetHomeFeed,
        feed_pb2.GetHomeFeedRequest(
            page=page_pb2.PageRequest(page_size=first, page_token=after or "")
        ),
    )
    loaded = await _page(info, response.items)
    # A post deleted since it reached the timeline is left out (its removal is on its way).
    kept = [
        (post, token)
        for post, token in zip(loaded, response.page.item_tokens, strict=True)
        if isinstance(post, content_pb2.Post)
    ]
    page = page_pb2.PageResponse(
        next_page_token=response.page.next_page_token,
        item_tokens=[token for _, token in kept],
    )
    return post_connection([post for post, _ in kept], page)


async def _page(
    info: Info, items: Sequence[feed_pb2.FeedItem]
) -> list[content_pb2.Post | Exception]:
    """The page's posts, with what the query's Post fields will ask for (their stats,
    `comments(first: …)`, the authors of both and their view counts) fetched with them
    (Loaders.page)."""
    comments_field = info.schema.get_type("Post").fields["comments"]  # type: ignore[union-attr]
    comment_nodes = lookahead.selected(info, ("edges", "node", "comments"))
    return await info.context.loaders.page(
        [item.post_id for item in items],
        stats=any(lookahead.selected(info, ("edges", "node", name)) for name in _STATS),
        comments=sorted(
            {args["first"] for args in lookahead.arguments(info, comment_nodes, comments_field)}
        ),
        authors=bool(lookahead.selected(info, ("edges", "node", "author"))),
        commenters=bool(lookahead.selected(info, ("edges", "node", "comments", "author"))),
        views=bool(lookahead.selected(info, ("edges", "node", "viewCount"))),
    )
