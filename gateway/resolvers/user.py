"""User: profile fields come straight from the proto; empty strings become null."""

from typing import Any

from ariadne import ObjectType

from nova.user.v1 import user_pb2

user = ObjectType("User")


@user.field("avatarUrl")
def resolve_avatar_url(obj: user_pb2.User, *_: Any) -> str | None:
    return obj.avatar_url or None


@user.field("email")
def resolve_email(obj: user_pb2.User, *_: Any) -> str | None:
    # The user service fills it in only when the caller is this user.
    return obj.email or None


@user.field("isFollowedByViewer")
def resolve_is_followed_by_viewer(obj: user_pb2.User, *_: Any) -> bool:
    return obj.followed_by_viewer
