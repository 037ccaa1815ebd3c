"""Post and Comment: every edge to another object goes through a DataLoader."""

from typing import Any

from ariadne import ObjectType

from gateway.context import Info
from nova.content.v1 import content_pb2
from nova.user.v1 import user_pb2

post = ObjectType("Post")
comment = ObjectType("Comment")


@post.field("author")
@comment.field("author")
async def resolve_author(obj: content_pb2.Post | content_pb2.Comment, info: Info) -> user_pb2.User:
    return await info.context.loaders.users.load(obj.author_id)


@post.field("likeCount")
async def resolve_like_count(obj: content_pb2.Post, info: Info) -> int:
    return (await info.context.loaders.stats.load(obj.id)).like_count


@post.field("commentCount")
async def resolve_comment_count(obj: content_pb2.Post, info: Info) -> int:
    return (await info.context.loaders.stats.load(obj.id)).comment_count


@post.field("viewerHasLiked")
async def resolve_viewer_has_liked(obj: content_pb2.Post, info: Info) -> bool:
    return (await info.context.loaders.stats.load(obj.id)).viewer_has_liked


@post.field("comments")
async def resolve_comments(
    obj: content_pb2.Post, info: Info, first: int
) -> list[content_pb2.Comment]:
    # `first` was checked against BatchListComments' maximum before execution (limits).
    return await info.context.loaders.comments.load((obj.id, first))


@comment.field("post")
async def resolve_comment_post(obj: content_pb2.Comment, info: Info) -> Any:
    return await info.context.loaders.posts.load(obj.post_id)
