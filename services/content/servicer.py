"""gRPC surface of nova.content.v1.ContentService: validate, call the repository, build protos."""

import asyncio
import uuid
from typing import Any

from grpc import aio

from nova.content.v1 import content_pb2, content_pb2_grpc
from services.content.cache import CachedPosts, post_message
from services.content.repository import CommentRecord, ContentRepository, PostStatsRecord
from services.runtime.auth import caller_or_none, require_caller
from services.runtime.pagination import paginate, read_page
from services.runtime.tenancy.current import current_tenant
from services.runtime.timestamps import to_timestamp
from services.runtime.validation import check_limit, check_text, parse_id, parse_ids

Context = aio.ServicerContext[Any, Any]

MAX_POST_CHARACTERS = 5000
MAX_COMMENT_CHARACTERS = 2000

MAX_BATCH_GET_POSTS = 100
"""BatchGetPosts answers at most this many ids per call (the proto documents it)."""
MAX_LIST_POSTS_BY_AUTHORS = 1000
"""ListPostsByAuthors merges at most this many authors per call: the gateway's home feed
sends up to 1,000 follows. Each costs one index entry (repository.py), so any caller,
anonymous too, may send them all."""
MAX_POSTS_BY_AUTHORS_PAGE = 100
"""ListPostsByAuthors' largest page: the posts it reads grow with its square (5,151 for
100), never with the number of authors' posts."""
MAX_BATCH_LIST_COMMENTS = 100
"""BatchListComments answers at most this many post ids per call."""
MAX_BATCH_GET_POST_STATS = 100
"""BatchGetPostStats answers at most this many post ids per call."""
DEFAULT_COMMENTS_PER_POST = 3
MAX_COMMENTS_PER_POST = 20


class ContentServicer(content_pb2_grpc.ContentServiceServicer):
    def __init__(self, repository: ContentRepository, *, posts: CachedPosts | None = None) -> None:
        self._content = repository
        # None (no Redis, or NOVA_CACHE=off): posts are read from PostgreSQL.
        self._cached_posts = posts

    async def CreatePost(
        self, request: content_pb2.CreatePostRequest, context: Context
    ) -> content_pb2.CreatePostResponse:
        caller = require_caller()
        text = check_text(request.text, "text", minimum=1, maximum=MAX_POST_CHARACTERS)
        post = await self._content.create_post(
            tenant_id=caller.tenant_id, author_id=caller.user_id, text=text
        )
        return content_pb2.CreatePostResponse(post=post_message(post))

    async def GetPost(
        self, request: content_pb2.GetPostRequest, context: Context
    ) -> content_pb2.GetPostResponse:
        tenant_id, post_id = current_tenant(), parse_id(request.id, "id")
        if self._cached_posts is not None:
            post = await self._cached_posts.get_post(tenant_id=tenant_id, post_id=post_id)
        else:
            post = post_message(await self._content.get_post(tenant_id=tenant_id, post_id=post_id))
        return content_pb2.GetPostResponse(post=post)

    async def BatchGetPosts(
        self, request: content_pb2.BatchGetPostsRequest, context: Context
    ) -> content_pb2.BatchGetPostsResponse:
        ids = parse_ids(request.ids, "ids", maximum=MAX_BATCH_GET_POSTS)
        comments_per_post = check_limit(
            request.comments_per_post,
            "comments_per_post",
            default=0,
            maximum=MAX_COMMENTS_PER_POST,
        )
        tenant_id = current_tenant()
        # The stats and comments are read beside the posts (on a connection of their
        # own): the call takes as long as the slower of the two, not their sum.
        found, (stats, comments) = await asyncio.gather(
            self._posts(tenant_id, ids),
            self._extras(tenant_id, ids, request.include_stats, comments_per_post),
        )
        # A post deleted between the reads has no stats: it is answered as missing, so
        # the lists stay one entry per post.
        kept = [i for i in ids if i in found and (i in stats or not request.include_stats)]
        answered = set(kept)
        return content_pb2.BatchGetPostsResponse(
            posts=[found[i] for i in kept],
            missing_ids=[str(i) for i in ids if i not in answered],
            stats=[_stats_proto(stats[i]) for i in kept if request.include_stats],
            comments=[
                content_pb2.PostComments(
                    post_id=str(i), comments=[_comment_proto(c) for c in comments.get(i, ())]
                )
                for i in kept
                if comments_per_post
            ],
        )

    async def _extras(
        self, tenant_id: uuid.UUID, ids: list[uuid.UUID], stats: bool, comments_per_post: int
    ) -> tuple[dict[uuid.UUID, PostStatsRecord], dict[uuid.UUID, list[CommentRecord]]]:
        """The stats and latest comments BatchGetPosts was asked for: one statement for
        both, one for either, none for neither."""
        content, viewer = self._content, _viewer_id()
        if stats and comments_per_post:
            return await content.stats_and_comments(
                tenant_id=tenant_id,
                viewer_id=viewer,
                post_ids=ids,
                limit_per_post=comments_per_post,
            )
        if stats:
            found = await content.get_post_stats(
                tenant_id=tenant_id, viewer_id=viewer, post_ids=ids
            )
            return found, {}
        if comments_per_post:
            latest = await content.latest_comments(
                tenant_id=tenant_id, post_ids=ids, limit_per_post=comments_per_post
            )
            return {}, latest
        return {}, {}

    async def _posts(
        self, tenant_id: uuid.UUID, ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, content_pb2.Post]:
        if self._cached_posts is not None:
            return await self._cached_posts.get_posts(tenant_id=tenant_id, post_ids=ids)
        stored = await self._content.get_posts(tenant_id=tenant_id, post_ids=ids)
        return {post_id: post_message(post) for post_id, post in stored.items()}

    async def DeletePost(
        self, request: content_pb2.DeletePostRequest, context: Context
    ) -> content_pb2.DeletePostResponse:
        caller = require_caller()
        post_id = parse_id(request.id, "id")
        await self._content.delete_post(
            tenant_id=caller.tenant_id, post_id=post_id, author_id=caller.user_id
        )
        if self._cached_posts is not None:
            await self._cached_posts.forget(tenant_id=caller.tenant_id, post_id=post_id)
        return content_pb2.DeletePostResponse()

    async def ListUserPosts(
        self, request: content_pb2.ListUserPostsRequest, context: Context
    ) -> content_pb2.ListUserPostsResponse:
        user_id = parse_id(request.user_id, "user_id")
        page = read_page(request.page)
        rows = await self._content.list_user_posts(
            tenant_id=current_tenant(), author_id=user_id, after=page.after, limit=page.size + 1
        )
        posts, page_response = paginate(rows, page, key=lambda post: post.id)
        return content_pb2.ListUserPostsResponse(
            posts=[post_message(post) for post in posts], page=page_response
        )

    async def ListPostsByAuthors(
        self, request: content_pb2.ListPostsByAuthorsRequest, context: Context
    ) -> content_pb2.ListPostsByAuthorsResponse:
        author_ids = parse_ids(request.author_ids, "author_ids", maximum=MAX_LIST_POSTS_BY_AUTHORS)
        page = read_page(request.page, maximum=MAX_POSTS_BY_AUTHORS_PAGE)
        rows = await self._content.list_posts_by_authors(
            tenant_id=current_tenant(),
            author_ids=author_ids,
            after=page.after,
            limit=page.size + 1,
        )
        posts, page_response = paginate(rows, page, key=lambda post: post.id)
        return content_pb2.ListPostsByAuthorsResponse(
            posts=[post_message(post) for post in posts], page=page_response
        )

    async def CreateComment(
        self, request: content_pb2.CreateCommentRequest, context: Context
    ) -> content_pb2.CreateCommentResponse:
        caller = require_caller()
        post_id = parse_id(request.post_id, "post_id")
        text = check_text(request.text, "text", minimum=1, maximum=MAX_COMMENT_CHARACTERS)
        comment = await self._content.create_comment(
            tenant_id=caller.tenant_id, post_id=post_id, author_id=caller.user_id, text=text
        )
        return content_pb2.CreateCommentResponse(comment=_comment_proto(comment))

    async def BatchListComments(
        self, request: content_pb2.BatchListCommentsRequest, context: Context
    ) -> content_pb2.BatchListCommentsResponse:
        ids = parse_ids(request.post_ids, "post_ids", maximum=MAX_BATCH_LIST_COMMENTS)
        limit = check_limit(
            request.limit_per_post,
            "limit_per_post",
            default=DEFAULT_COMMENTS_PER_POST,
            maximum=MAX_COMMENTS_PER_POST,
        )
        found = await self._content.latest_comments(
            tenant_id=current_tenant(), post_ids=ids, limit_per_post=limit
        )
        return content_pb2.BatchListCommentsResponse(
            posts=[
                content_pb2.PostComments(
                    post_id=str(i), comments=[_comment_proto(c) for c in found[i]]
                )
                for i in ids
                if i in found
            ],
            missing_ids=[str(i) for i in ids if i not in found],
        )

    async def LikePost(
        self, request: content_pb2.LikePostRequest, context: Context
    ) -> content_pb2.LikePostResponse:
        caller = require_caller()
        changed = await self._content.like_post(
            tenant_id=caller.tenant_id,
            post_id=parse_id(request.post_id, "post_id"),
            user_id=caller.user_id,
        )
        return content_pb2.LikePostResponse(changed=changed)

    async def UnlikePost(
        self, request: content_pb2.UnlikePostRequest, context: Context
    ) -> content_pb2.UnlikePostResponse:
        caller = require_caller()
        changed = await self._content.unlike_post(
            tenant_id=caller.tenant_id,
            post_id=parse_id(request.post_id, "post_id"),
            user_id=caller.user_id,
        )
        return content_pb2.UnlikePostResponse(changed=changed)

    async def BatchGetPostStats(
        self, request: content_pb2.BatchGetPostStatsRequest, context: Context
    ) -> content_pb2.BatchGetPostStatsResponse:
        ids = parse_ids(request.post_ids, "post_ids", maximum=MAX_BATCH_GET_POST_STATS)
        found = await self._content.get_post_stats(
            tenant_id=current_tenant(), viewer_id=_viewer_id(), post_ids=ids
        )
        return content_pb2.BatchGetPostStatsResponse(
            stats=[_stats_proto(found[i]) for i in ids if i in found],
            missing_ids=[str(i) for i in ids if i not in found],
        )


def _viewer_id() -> uuid.UUID | None:
    caller = caller_or_none()
    return caller.user_id if caller else None


def _comment_proto(comment: CommentRecord) -> content_pb2.Comment:
    return content_pb2.Comment(
        id=str(comment.id),
        post_id=str(comment.post_id),
        author_id=str(comment.author_id),
        text=comment.text,
        created_at=to_timestamp(comment.created_at),
    )


def _stats_proto(stats: PostStatsRecord) -> content_pb2.PostStats:
    return content_pb2.PostStats(
        post_id=str(stats.post_id),
        like_count=stats.like_count,
        comment_count=stats.comment_count,
        viewer_has_liked=stats.viewer_has_liked,
    )
