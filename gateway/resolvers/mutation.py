"""Mutations: one RPC each (signUp: two), then the changed object, read fresh.

What a mutation changes is dropped from the request's loaders first, so the object it
returns (a post's like count, a user's follower count) is read after the change.
"""

from typing import Any

from ariadne import MutationType
from google.protobuf.field_mask_pb2 import FieldMask

from gateway.clients import Backend
from gateway.context import Info
from gateway.errors import BadUserInput
from gateway.loaders import canonical_id
from nova.content.v1 import content_pb2
from nova.user.v1 import user_pb2

mutation = MutationType()


@mutation.field("signUp")
async def resolve_sign_up(_: None, info: Info, input: dict[str, Any]) -> dict[str, Any]:
    backend = info.context.backend
    await backend.call(
        backend.users.CreateUser,
        user_pb2.CreateUserRequest(
            handle=input["handle"],
            email=input["email"],
            password=input["password"],
            display_name=input.get("display_name") or "",
        ),
    )
    return await _authenticate(backend, input["handle"], input["password"])


@mutation.field("logIn")
async def resolve_log_in(_: None, info: Info, login: str, password: str) -> dict[str, Any]:
    return await _authenticate(info.context.backend, login, password)


async def _authenticate(backend: Backend, login: str, password: str) -> dict[str, Any]:
    response = await backend.call(
        backend.users.Authenticate, user_pb2.AuthenticateRequest(login=login, password=password)
    )
    return {
        "token": response.access_token,
        "expires_at": response.expires_at,
        "user": response.user,
    }


@mutation.field("createPost")
async def resolve_create_post(_: None, info: Info, text: str) -> content_pb2.Post:
    context = info.context
    backend = context.backend
    response = await backend.call(
        backend.content.CreatePost, content_pb2.CreatePostRequest(text=text)
    )
    context.loaders.prime_posts([response.post])
    return response.post


@mutation.field("deletePost")
async def resolve_delete_post(_: None, info: Info, id: str) -> str:
    context = info.context
    post_id = canonical_id(id, "id")
    backend = context.backend
    await backend.call(backend.content.DeletePost, content_pb2.DeletePostRequest(id=post_id))
    context.loaders.forget_post(post_id)
    return post_id


@mutation.field("addComment")
async def resolve_add_comment(_: None, info: Info, post_id: str, text: str) -> content_pb2.Comment:
    context = info.context
    backend = context.backend
    response = await backend.call(
        backend.content.CreateComment,
        content_pb2.CreateCommentRequest(post_id=canonical_id(post_id, "postId"), text=text),
    )
    context.loaders.forget_post(response.comment.post_id)
    return response.comment


@mutation.field("likePost")
async def resolve_like_post(_: None, info: Info, post_id: str) -> content_pb2.Post:
    context = info.context
    post_id = canonical_id(post_id, "postId")
    backend = context.backend
    await backend.call(backend.content.LikePost, content_pb2.LikePostRequest(post_id=post_id))
    context.loaders.forget_post(post_id)
    return await context.loaders.posts.load(post_id)


@mutation.field("unlikePost")
async def resolve_unlike_post(_: None, info: Info, post_id: str) -> content_pb2.Post:
    context = info.context
    post_id = canonical_id(post_id, "postId")
    backend = context.backend
    await backend.call(backend.content.UnlikePost, content_pb2.UnlikePostRequest(post_id=post_id))
    context.loaders.forget_post(post_id)
    return await context.loaders.posts.load(post_id)


@mutation.field("follow")
async def resolve_follow(_: None, info: Info, user_id: str) -> user_pb2.User:
    context = info.context
    user_id = canonical_id(user_id, "userId")
    backend = context.backend
    await backend.call(backend.users.Follow, user_pb2.FollowRequest(user_id=user_id))
    return await _changed_user(info, user_id)


@mutation.field("unfollow")
async def resolve_unfollow(_: None, info: Info, user_id: str) -> user_pb2.User:
    context = info.context
    user_id = canonical_id(user_id, "userId")
    backend = context.backend
    await backend.call(backend.users.Unfollow, user_pb2.UnfollowRequest(user_id=user_id))
    return await _changed_user(info, user_id)


async def _changed_user(info: Info, user_id: str) -> user_pb2.User:
    context = info.context
    context.loaders.forget_user(user_id)
    viewer = context.require_viewer()
    context.loaders.forget_user(viewer.user_id)
    return await context.loaders.users.load(user_id)


@mutation.field("updatePreferences")
async def resolve_update_preferences(
    _: None, info: Info, input: dict[str, Any]
) -> user_pb2.Preferences:
    backend = info.context.backend
    # Only the fields the input sets change; an explicit null is not a value to store.
    changes = {name: value for name, value in input.items() if value is not None}
    if not changes:
        # An empty update mask would mean "every field" to the service: reset them all.
        raise BadUserInput("set at least one field of the input")
    response = await backend.call(
        backend.users.UpdatePreferences,
        user_pb2.UpdatePreferencesRequest(
            preferences=user_pb2.Preferences(**changes),
            update_mask=FieldMask(paths=sorted(changes)),
        ),
    )
    return response.preferences
