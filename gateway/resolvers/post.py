"""Post and Comment: every edge to another object goes through a DataLoader, and is
answered at once when its load has already finished (`settled`)."""

from collections.abc import Awaitable
from operator import attrgetter
from typing import Any

from ariadne import ObjectType

from gateway.context import Info
from gateway.loaders import itself, settled
from nova.content.v1 import content_pb2
from nova.user.v1 import user_pb2

post = ObjectType("Post")
comment = ObjectType("Comment")

_like_count = attrgetter("like_count")
_comment_count = attrgetter("comment_count")
_viewer_has_liked = attrgetter("viewer_has_liked")
_views = attrgetter("views")


@post.field("author")
@comment.field("author")
def resolve_author(
    obj: content_pb2.Post | content_pb2.Comment, info: Info
) -> user_pb2.User | Awaitable[user_pb2.User]:
    return settled(info.context.loaders.users.load(obj.author_id), itself)


@post.field("likeCount")
def resolve_like_count(obj: content_pb2.Post, info: Info) -> int | Awaitable[int]:
    return settled(info.context.loaders.stats.load(obj.id), _like_count)


@post.field("commentCount")
def resolve_comment_count(obj: content_pb2.Post, info: Info) -> int | Awaitable[int]:
    return settled(info.context.loaders.stats.load(obj.id), _comment_count)


@post.field("viewerHasLiked")
def resolve_viewer_has_liked(obj: content_pb2.Post, info: Info) -> bool | Awaitable[bool]:
    return settled(info.context.loaders.stats.load(obj.id), _viewer_has_liked)


@post.field("viewCount")
def resolve_view_count(obj: content_pb2.Post, info: Info) -> int | Awaitable[int]:
    # From the analytics service: when it fails, this field fails alone (it is nullable).
    return settled(info.context.loaders.metrics.load(obj.id), _views)


@post.field("comments")
def resolve_comments(
    obj: content_pb2.Post, info: Info, first: int
) -> list[content_pb2.Comment] | Awaitable[list[content_pb2.Comment]]:
    # `first` was checked against BatchListComments' maximum before execution (limits).
    return settled(info.context.loaders.comments.load((obj.id, first)), itself)


@comment.field("post")
def resolve_comment_post(obj: content_pb2.Comment, info: Info) -> Any:
    return settled(info.context.loaders.posts.load(obj.post_id), itself)
