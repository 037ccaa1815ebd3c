"""Query fields that look one thing up (homeFeed is in feed.py)."""

from typing import Any

from ariadne import QueryType

from gateway.context import Info
from gateway.errors import BadUserInput
from gateway.loaders import canonical_id
from gateway.resolvers.connection import post_connection
from nova.common.v1 import page_pb2
from nova.content.v1 import content_pb2
from nova.user.v1 import user_pb2

query = QueryType()


@query.field("viewer")
async def resolve_viewer(_: None, info: Info) -> user_pb2.User | None:
    context = info.context
    if context.viewer is None:
        return None
    return await context.loaders.users.load(canonical_id(context.viewer.user_id, "token"))


@query.field("user")
async def resolve_user(
    _: None, info: Info, handle: str | None = None, id: str | None = None
) -> user_pb2.User:
    loaders = info.context.loaders
    if (handle is None) == (id is None):
        raise BadUserInput("give exactly one of handle and id")
    if id is not None:
        return await loaders.users.load(canonical_id(id, "id"))
    assert handle is not None
    return await loaders.users_by_handle.load(handle.strip().removeprefix("@"))


@query.field("post")
async def resolve_post(_: None, info: Info, id: str) -> content_pb2.Post:
    return await info.context.loaders.posts.load(canonical_id(id, "id"))


@query.field("userPosts")
async def resolve_user_posts(
    _: None, info: Info, user_id: str, first: int, after: str | None = None
) -> dict[str, Any]:
    context = info.context
    backend = context.backend
    response = await backend.call(
        backend.content.ListUserPosts,
        content_pb2.ListUserPostsRequest(
            user_id=canonical_id(user_id, "userId"),
            page=page_pb2.PageRequest(page_size=first, page_token=after or ""),
        ),
    )
    context.loaders.prime_posts(response.posts)
    return post_connection(response.posts, response.page)


@query.field("preferences")
async def resolve_preferences(_: None, info: Info) -> user_pb2.Preferences:
    backend = info.context.backend
    response = await backend.call(backend.users.GetPreferences, user_pb2.GetPreferencesRequest())
    return response.preferences
