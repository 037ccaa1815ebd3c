"""The home feed as the gateway assembled it before FeedService: ListFollowing paged
through the viewer's follows (up to 1,000 authors), then ListPostsByAuthors merged their
latest posts on every request. Kept only as `./dev bench feed`'s baseline.

The gateway keeps no switch for it: `install` replaces homeFeed's resolver in one built
app's schema (build_schema makes a new schema per app, so no other app sees it), the
way per_field.PerFieldLoaders is handed to one app as its loaders.
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLObjectType

from gateway.app import GatewayApp
from gateway.context import Info, RequestContext
from gateway.resolvers.connection import post_connection
from nova.common.v1 import page_pb2
from nova.content.v1 import content_pb2
from nova.user.v1 import user_pb2

MAX_AUTHORS = 1000
"""ListPostsByAuthors merges at most this many authors per call (content.proto)."""
FOLLOWING_PAGE = 100
"""ListFollowing's largest page (user.proto)."""


def install(app: GatewayApp) -> None:
    """Makes `app` answer homeFeed by the gateway-side pull instead of GetHomeFeed."""
    query = app.executor.schema.graphql.type_map["Query"]
    if not isinstance(query, GraphQLObjectType):
        raise TypeError("the schema's Query is not an object type")
    query.fields["homeFeed"].resolve = resolve_pulled_feed


async def resolve_pulled_feed(
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
    """The viewer's followed authors; their profiles prime the users loader, so the
    page's authors cost no further RPC."""
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
