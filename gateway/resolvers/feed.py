"""homeFeed, until the feed service exists: the latest posts of the people the viewer
follows, merged by the content service.

ListFollowing pages through the viewer's follows (up to the 1000 authors one
ListPostsByAuthors call merges; past that, the most recently followed), then one
ListPostsByAuthors call makes the page. The followed users come back as full profiles,
so they prime the users loader: the page's authors cost no further RPC.
"""

from typing import Any

from ariadne import QueryType

from gateway.context import Info, RequestContext
from gateway.resolvers.connection import post_connection
from nova.common.v1 import page_pb2
from nova.content.v1 import content_pb2
from nova.user.v1 import user_pb2

MAX_AUTHORS = 1000
"""ListPostsByAuthors merges at most this many authors per call (content.proto)."""
FOLLOWING_PAGE = 100
"""ListFollowing's largest page (user.proto)."""
FOLLOWING_CALLS = MAX_AUTHORS // FOLLOWING_PAGE
"""ListFollowing calls one homeFeed can make: 1,000 follows in pages of 100."""
WORK = MAX_AUTHORS + FOLLOWING_CALLS + 1
"""What one homeFeed costs the backends beyond the posts it returns, in the cost model's
unit (gateway.limits): 1,011. One per author it can reach (listed by ListFollowing, then
probed for their newest post by ListPostsByAuthors: one row and one index descent each,
counted as one object) and one per RPC. The weight does not depend on the viewer: the
limit is checked before anyone's follows are read. One homeFeed with a 100-post page
fits under the default maxCost (2,000); two do not."""

feed_query = QueryType()


@feed_query.field("homeFeed")
async def resolve_home_feed(
    _: None, info: Info, first: int, after: str | None = None
) -> dict[str, Any]:
    context = info.context
    authors = await _followed(context)
    if not authors:
        return post_connection([], page_pb2.PageResponse())
    backend = context.backend
    response = await backend.call(
        backend.content.ListPostsByAuthors,
        content_pb2.ListPostsByAuthorsRequest(
            author_ids=authors,
            page=page_pb2.PageRequest(page_size=first, page_token=after or ""),
        ),
    )
    context.loaders.prime_posts(response.posts)
    return post_connection(response.posts, response.page)


async def _followed(context: RequestContext) -> list[str]:
    viewer = context.require_viewer()
    backend = context.backend
    authors: list[str] = []
    token = ""
    while len(authors) < MAX_AUTHORS:
        response = await backend.call(
            backend.users.ListFollowing,
            user_pb2.ListFollowingRequest(
                user_id=viewer.user_id,
                page=page_pb2.PageRequest(page_size=FOLLOWING_PAGE, page_token=token),
            ),
        )
        context.loaders.prime_users(response.users)
        authors.extend(user.id for user in response.users)
        token = response.page.next_page_token
        if not token:
            break
    return authors[:MAX_AUTHORS]
