"""homeFeed: the page from FeedService.GetHomeFeed (post ids, their authors and a cursor
from the viewer's timeline), then the posts through the posts DataLoader (one
BatchGetPosts for the page), with their comments and stats fetched beside them and the
authors and commenters in one BatchGetUsers (lookahead.py): by the time the page's
fields resolve, every value they ask for is there. Five RPCs per page, whatever its size
and however many people the viewer follows.
"""

import asyncio
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
"""The Post fields BatchGetPostStats answers."""

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
    loaded, _ = await asyncio.gather(
        asyncio.gather(
            *(context.loaders.posts.load(item.post_id) for item in response.items),
            return_exceptions=True,
        ),
        _prefetch(info, response.items),
    )
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


async def _prefetch(info: Info, items: Sequence[feed_pb2.FeedItem]) -> None:
    """Starts what the page's posts will ask for, beside BatchGetPosts: their comments
    (the query's `comments(first: …)`) and stats, then the post authors and commenters
    in one BatchGetUsers. The field resolvers then find them in the loaders' caches."""
    comments_field = info.schema.get_type("Post").fields["comments"]  # type: ignore[union-attr]
    comment_nodes = lookahead.selected(info, ("edges", "node", "comments"))
    firsts = {args["first"] for args in lookahead.arguments(info, comment_nodes, comments_field)}
    await info.context.loaders.prefetch(
        [(item.post_id, n) for item in items for n in firsts],
        authors=(
            [item.author_id for item in items]
            if lookahead.selected(info, ("edges", "node", "author"))
            else []
        ),
        commenters=bool(lookahead.selected(info, ("edges", "node", "comments", "author"))),
        stats=(
            [item.post_id for item in items]
            if any(lookahead.selected(info, ("edges", "node", name)) for name in _STATS)
            else []
        ),
    )
