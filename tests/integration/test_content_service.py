"""ContentService on a real server and PostgreSQL: behaviour and every kind of bad input."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc import aio

from nova.common.v1 import page_pb2
from nova.content.v1 import content_pb2, content_pb2_grpc
from services.runtime.spec import Dependencies
from tests.conftest import SignedIn, SignUp, status_of

if TYPE_CHECKING:
    from nova.content.v1.content_pb2_grpc import ContentServiceAsyncStub

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="session")
def content(channels: dict[str, aio.Channel]) -> ContentServiceAsyncStub:
    return content_pb2_grpc.ContentServiceStub(channels["content"])


async def fails(call: Awaitable[Any], code: grpc.StatusCode, fragment: str) -> None:
    """Awaits an RPC that must fail with `code` and a message containing `fragment`."""
    with pytest.raises(aio.AioRpcError) as error:
        await call
    actual, details = status_of(error)
    assert actual == code, details
    assert fragment in details, details


async def publish(
    content: ContentServiceAsyncStub, author: SignedIn, text: str = "hello"
) -> content_pb2.Post:
    response = await content.CreatePost(
        content_pb2.CreatePostRequest(text=text), metadata=author.metadata
    )
    return response.post


async def comment(
    content: ContentServiceAsyncStub, author: SignedIn, post: content_pb2.Post, text: str
) -> content_pb2.Comment:
    response = await content.CreateComment(
        content_pb2.CreateCommentRequest(post_id=post.id, text=text), metadata=author.metadata
    )
    return response.comment


async def stats_of(
    content: ContentServiceAsyncStub, post: content_pb2.Post, viewer: SignedIn | None = None
) -> content_pb2.PostStats:
    response = await content.BatchGetPostStats(
        content_pb2.BatchGetPostStatsRequest(post_ids=[post.id]),
        metadata=viewer.metadata if viewer else None,
    )
    (stats,) = response.stats
    return stats


def ghost_id() -> str:
    return str(uuid.uuid4())


async def test_a_post_is_published_as_the_caller_and_readable_anonymously(
    content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    alice = await sign_up()
    post = await publish(content, alice, "  first post  ")
    assert (post.author_id, post.text) == (alice.user.id, "first post")
    assert uuid.UUID(post.id).version == 7
    assert post.created_at.seconds > 0
    read = await content.GetPost(content_pb2.GetPostRequest(id=post.id))
    assert read.post == post


async def test_create_post_accepts_5000_characters_and_rejects_empty_or_longer_text(
    content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    alice = await sign_up()
    assert len((await publish(content, alice, "x" * 5000)).text) == 5000
    for text, fragment in [("", "text is required"), ("   ", "text is required")]:
        await fails(publish(content, alice, text), INVALID, fragment)
    await fails(publish(content, alice, "x" * 5001), INVALID, "at most 5000")


async def test_create_post_needs_a_signed_in_caller(content: ContentServiceAsyncStub) -> None:
    await fails(
        content.CreatePost(content_pb2.CreatePostRequest(text="hi")),
        UNAUTHENTICATED,
        "authorization: Bearer",
    )


async def test_get_post_rejects_empty_malformed_and_unknown_ids(
    content: ContentServiceAsyncStub,
) -> None:
    unknown = ghost_id()
    for post_id, code, fragment in [
        ("", INVALID, "id is required"),
        ("nope", INVALID, "id must be a UUID"),
        (unknown, NOT_FOUND, f"no post with id {unknown}"),
    ]:
        await fails(content.GetPost(content_pb2.GetPostRequest(id=post_id)), code, fragment)


async def test_batch_get_posts_keeps_request_order_answers_duplicates_once_and_lists_missing(
    content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    alice = await sign_up()
    a, b, c = [await publish(content, alice, text) for text in ("a", "b", "c")]
    unknown = ghost_id()
    response = await content.BatchGetPosts(
        content_pb2.BatchGetPostsRequest(ids=[c.id, unknown, a.id, b.id, a.id])
    )
    assert [p.id for p in response.posts] == [c.id, a.id, b.id]
    assert [p.text for p in response.posts] == ["c", "a", "b"]
    assert list(response.missing_ids) == [unknown]


async def test_batch_get_posts_answers_100_ids_and_rejects_empty_oversized_or_malformed_batches(
    content: ContentServiceAsyncStub,
) -> None:
    hundred = [ghost_id() for _ in range(100)]
    response = await content.BatchGetPosts(content_pb2.BatchGetPostsRequest(ids=hundred))
    assert list(response.missing_ids) == hundred
    for ids, fragment in [
        ([], "ids must name at least one id"),
        ([*hundred, ghost_id()], "101 ids; at most 100"),
        ([ghost_id(), "x"], "ids[1] must be a UUID"),
    ]:
        await fails(
            content.BatchGetPosts(content_pb2.BatchGetPostsRequest(ids=ids)), INVALID, fragment
        )


async def test_batch_get_posts_answers_stats_and_latest_comments_one_per_post_in_order(
    content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    alice, bob = await sign_up(), await sign_up()
    liked, quiet = await publish(content, alice, "liked"), await publish(content, alice, "quiet")
    await content.LikePost(content_pb2.LikePostRequest(post_id=liked.id), metadata=bob.metadata)
    said = [await comment(content, bob, liked, f"c{i}") for i in range(4)]
    unknown = ghost_id()
    response = await content.BatchGetPosts(
        content_pb2.BatchGetPostsRequest(
            ids=[quiet.id, unknown, liked.id, quiet.id], include_stats=True, comments_per_post=3
        ),
        metadata=bob.metadata,
    )
    assert [p.id for p in response.posts] == [quiet.id, liked.id]
    assert list(response.missing_ids) == [unknown]
    assert [
        (s.post_id, s.like_count, s.comment_count, s.viewer_has_liked) for s in response.stats
    ] == [
        (quiet.id, 0, 0, False),
        (liked.id, 1, 4, True),
    ]
    assert [(c.post_id, [x.text for x in c.comments]) for c in response.comments] == [
        (quiet.id, []),
        (liked.id, [x.text for x in reversed(said[1:])]),
    ]
    # Either alone (a statement of its own), or neither.
    stats_only = await content.BatchGetPosts(
        content_pb2.BatchGetPostsRequest(ids=[liked.id, quiet.id], include_stats=True),
        metadata=bob.metadata,
    )
    assert list(stats_only.stats) == list(response.stats)[::-1]
    assert len(stats_only.comments) == 0
    comments_only = await content.BatchGetPosts(
        content_pb2.BatchGetPostsRequest(ids=[quiet.id, liked.id], comments_per_post=3)
    )
    assert list(comments_only.comments) == list(response.comments)
    assert len(comments_only.stats) == 0
    plain = await content.BatchGetPosts(content_pb2.BatchGetPostsRequest(ids=[liked.id]))
    assert (len(plain.posts), len(plain.stats), len(plain.comments)) == (1, 0, 0)


async def test_batch_get_posts_answers_20_comments_per_post_and_rejects_more_or_negative(
    content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    alice = await sign_up()
    post = await publish(content, alice)
    said = [await comment(content, alice, post, f"c{i}") for i in range(21)]
    response = await content.BatchGetPosts(
        content_pb2.BatchGetPostsRequest(ids=[post.id], comments_per_post=20)
    )
    assert [c.id for c in response.comments[0].comments] == [c.id for c in reversed(said[1:])]
    for limit, fragment in [(21, "at most 20"), (-1, "comments_per_post")]:
        await fails(
            content.BatchGetPosts(
                content_pb2.BatchGetPostsRequest(ids=[post.id], comments_per_post=limit)
            ),
            INVALID,
            fragment,
        )


async def test_only_the_author_can_delete_a_post_and_its_comments_and_likes_go_with_it(
    content: ContentServiceAsyncStub, sign_up: SignUp, deps: Dependencies
) -> None:
    alice, bob = await sign_up(), await sign_up()
    post = await publish(content, alice)
    await comment(content, bob, post, "nice")
    await content.LikePost(content_pb2.LikePostRequest(post_id=post.id), metadata=bob.metadata)

    async def comments_and_likes() -> int:
        async with deps.db.connection() as conn:
            count: int = await conn.fetchval(
                """SELECT (SELECT count(*) FROM content_service.comments WHERE post_id = $1)
                        + (SELECT count(*) FROM content_service.likes WHERE post_id = $1)""",
                uuid.UUID(post.id),
            )
        return count

    delete = content_pb2.DeletePostRequest(id=post.id)
    await fails(
        content.DeletePost(delete, metadata=bob.metadata),
        grpc.StatusCode.PERMISSION_DENIED,
        f"post {post.id} belongs to another user; only its author can delete it",
    )
    assert (await content.GetPost(content_pb2.GetPostRequest(id=post.id))).post == post
    assert await comments_and_likes() == 2
    await content.DeletePost(delete, metadata=alice.metadata)
    await fails(content.GetPost(content_pb2.GetPostRequest(id=post.id)), NOT_FOUND, "no post")
    await fails(content.DeletePost(delete, metadata=alice.metadata), NOT_FOUND, "no post")
    stats = await content.BatchGetPostStats(
        content_pb2.BatchGetPostStatsRequest(post_ids=[post.id])
    )
    assert list(stats.missing_ids) == [post.id]
    assert await comments_and_likes() == 0


async def test_delete_post_rejects_bad_ids_and_anonymous_callers(
    content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    alice = await sign_up()
    for post_id, metadata, code, fragment in [
        ("", alice.metadata, INVALID, "id is required"),
        ("123", alice.metadata, INVALID, "id must be a UUID"),
        (ghost_id(), alice.metadata, NOT_FOUND, "no post with id"),
        (ghost_id(), None, UNAUTHENTICATED, "signed-in user"),
    ]:
        request = content_pb2.DeletePostRequest(id=post_id)
        await fails(content.DeletePost(request, metadata=metadata), code, fragment)


async def test_a_users_posts_page_newest_first_without_gaps_or_repeats(
    content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    alice, bob = await sign_up(), await sign_up()
    posts = [await publish(content, alice, f"post {i}") for i in range(5)]
    await publish(content, bob, "not alice's")
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        response = await content.ListUserPosts(
            content_pb2.ListUserPostsRequest(
                user_id=alice.user.id, page=page_pb2.PageRequest(page_size=2, page_token=token)
            )
        )
        seen += [p.id for p in response.posts]
        pages += 1
        token = response.page.next_page_token
        if not token:
            break
    assert seen == [p.id for p in reversed(posts)]
    assert pages == 3
    nobody = await content.ListUserPosts(content_pb2.ListUserPostsRequest(user_id=ghost_id()))
    assert (list(nobody.posts), nobody.page.next_page_token) == ([], "")


async def test_list_user_posts_rejects_bad_user_ids_page_sizes_and_tokens(
    content: ContentServiceAsyncStub,
) -> None:
    for user_id, page, fragment in [
        ("", page_pb2.PageRequest(), "user_id is required"),
        ("bad", page_pb2.PageRequest(), "user_id must be a UUID"),
        (ghost_id(), page_pb2.PageRequest(page_size=101), "at most 100"),
        (ghost_id(), page_pb2.PageRequest(page_size=-1), "must not be negative"),
        (ghost_id(), page_pb2.PageRequest(page_token="garbage!"), "page_token is not one"),
    ]:
        request = content_pb2.ListUserPostsRequest(user_id=user_id, page=page)
        await fails(content.ListUserPosts(request), INVALID, fragment)


async def test_posts_by_authors_are_merged_newest_first_across_pages_without_gaps_or_repeats(
    content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    authors = [await sign_up("author") for _ in range(3)]
    stranger = await sign_up("stranger")
    posts = [await publish(content, authors[i % 3], f"post {i}") for i in range(7)]
    await publish(content, stranger, "not followed")
    author_ids = [a.user.id for a in authors] + [authors[0].user.id, ghost_id()]
    seen: list[str] = []
    token = ""
    while True:
        response = await content.ListPostsByAuthors(
            content_pb2.ListPostsByAuthorsRequest(
                author_ids=author_ids, page=page_pb2.PageRequest(page_size=3, page_token=token)
            )
        )
        assert len(response.posts) <= 3
        seen += [p.id for p in response.posts]
        token = response.page.next_page_token
        if not token:
            break
    assert seen == [p.id for p in reversed(posts)]


async def test_list_posts_by_authors_accepts_1000_authors_and_rejects_bad_batches_and_pages(
    content: ContentServiceAsyncStub,
) -> None:
    thousand = [ghost_id() for _ in range(1000)]
    response = await content.ListPostsByAuthors(
        content_pb2.ListPostsByAuthorsRequest(author_ids=thousand)
    )
    assert list(response.posts) == []
    for author_ids, page, fragment in [
        ([], page_pb2.PageRequest(), "author_ids must name at least one id"),
        ([*thousand, ghost_id()], page_pb2.PageRequest(), "1001 ids; at most 1000"),
        (["bad"], page_pb2.PageRequest(), "author_ids[0] must be a UUID"),
        ([ghost_id()], page_pb2.PageRequest(page_size=101), "at most 100"),
        ([ghost_id()], page_pb2.PageRequest(page_token="djE6"), "page_token is not one"),
    ]:
        request = content_pb2.ListPostsByAuthorsRequest(author_ids=author_ids, page=page)
        await fails(content.ListPostsByAuthors(request), INVALID, fragment)


async def test_comments_are_counted_and_the_latest_ones_listed_per_post_in_request_order(
    content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    alice, bob = await sign_up(), await sign_up()
    busy, quiet, short = [await publish(content, alice, t) for t in ("busy", "quiet", "short")]
    busy_comments = [await comment(content, bob, busy, f"c{i}") for i in range(5)]
    short_comments = [await comment(content, alice, short, f"s{i}") for i in range(2)]
    assert busy_comments[0].author_id == bob.user.id
    assert busy_comments[0].post_id == busy.id
    assert (await stats_of(content, busy)).comment_count == 5
    unknown = ghost_id()

    async def listed(limit: int) -> dict[str, list[str]]:
        response = await content.BatchListComments(
            content_pb2.BatchListCommentsRequest(
                post_ids=[short.id, unknown, busy.id, quiet.id, short.id], limit_per_post=limit
            )
        )
        assert list(response.missing_ids) == [unknown]
        assert [p.post_id for p in response.posts] == [short.id, busy.id, quiet.id]
        return {p.post_id: [c.text for c in p.comments] for p in response.posts}

    assert await listed(0) == {
        short.id: ["s1", "s0"],
        busy.id: ["c4", "c3", "c2"],
        quiet.id: [],
    }
    assert (await listed(1))[busy.id] == ["c4"]
    assert (await listed(20))[busy.id] == [c.text for c in reversed(busy_comments)]
    assert (await listed(20))[short.id] == [c.text for c in reversed(short_comments)]


async def test_create_comment_rejects_bad_text_bad_or_unknown_posts_and_anonymous_callers(
    content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    alice = await sign_up()
    post = await publish(content, alice)
    assert len((await comment(content, alice, post, "y" * 2000)).text) == 2000
    for post_id, text, metadata, code, fragment in [
        (post.id, "", alice.metadata, INVALID, "text is required"),
        (post.id, "y" * 2001, alice.metadata, INVALID, "at most 2000"),
        ("", "hi", alice.metadata, INVALID, "post_id is required"),
        ("bad", "hi", alice.metadata, INVALID, "post_id must be a UUID"),
        (ghost_id(), "hi", alice.metadata, NOT_FOUND, "no post with id"),
        (post.id, "hi", None, UNAUTHENTICATED, "signed-in user"),
    ]:
        request = content_pb2.CreateCommentRequest(post_id=post_id, text=text)
        await fails(content.CreateComment(request, metadata=metadata), code, fragment)
    assert (await stats_of(content, post)).comment_count == 1


async def test_batch_list_comments_rejects_bad_batches_and_limits(
    content: ContentServiceAsyncStub,
) -> None:
    hundred = [ghost_id() for _ in range(100)]
    response = await content.BatchListComments(
        content_pb2.BatchListCommentsRequest(post_ids=hundred)
    )
    assert list(response.missing_ids) == hundred
    for post_ids, limit, fragment in [
        ([], 0, "post_ids must name at least one id"),
        ([*hundred, ghost_id()], 0, "101 ids; at most 100"),
        (["x"], 0, "post_ids[0] must be a UUID"),
        ([ghost_id()], -1, "limit_per_post must not be negative"),
        ([ghost_id()], 21, "limit_per_post is 21; at most 20"),
    ]:
        request = content_pb2.BatchListCommentsRequest(post_ids=post_ids, limit_per_post=limit)
        await fails(content.BatchListComments(request), INVALID, fragment)


async def test_likes_are_idempotent_and_each_user_is_counted_once(
    content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    alice, bob = await sign_up(), await sign_up()
    post = await publish(content, alice)
    like = content_pb2.LikePostRequest(post_id=post.id)
    unlike = content_pb2.UnlikePostRequest(post_id=post.id)
    assert not (await content.UnlikePost(unlike, metadata=bob.metadata)).changed
    assert (await content.LikePost(like, metadata=bob.metadata)).changed
    assert not (await content.LikePost(like, metadata=bob.metadata)).changed
    assert (await content.LikePost(like, metadata=alice.metadata)).changed
    assert (await stats_of(content, post)).like_count == 2
    assert (await content.UnlikePost(unlike, metadata=bob.metadata)).changed
    assert not (await content.UnlikePost(unlike, metadata=bob.metadata)).changed
    assert (await stats_of(content, post)).like_count == 1


async def test_stats_say_whether_each_viewer_liked_each_post(
    content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    alice, bob = await sign_up(), await sign_up()
    first, second = await publish(content, alice, "1"), await publish(content, alice, "2")
    await content.LikePost(content_pb2.LikePostRequest(post_id=first.id), metadata=alice.metadata)
    await content.LikePost(content_pb2.LikePostRequest(post_id=second.id), metadata=bob.metadata)
    await comment(content, bob, second, "hi")
    unknown = ghost_id()
    request = content_pb2.BatchGetPostStatsRequest(
        post_ids=[second.id, unknown, first.id, second.id]
    )

    async def liked_by(viewer: SignedIn | None) -> list[tuple[str, int, int, bool]]:
        response = await content.BatchGetPostStats(
            request, metadata=viewer.metadata if viewer else None
        )
        assert list(response.missing_ids) == [unknown]
        return [
            (s.post_id, s.like_count, s.comment_count, s.viewer_has_liked) for s in response.stats
        ]

    assert await liked_by(alice) == [(second.id, 1, 1, False), (first.id, 1, 0, True)]
    assert await liked_by(bob) == [(second.id, 1, 1, True), (first.id, 1, 0, False)]
    assert await liked_by(None) == [(second.id, 1, 1, False), (first.id, 1, 0, False)]


async def test_like_and_unlike_reject_bad_or_unknown_posts_and_anonymous_callers(
    content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    alice = await sign_up()
    post = await publish(content, alice)
    for post_id, metadata, code, fragment in [
        ("", alice.metadata, INVALID, "post_id is required"),
        ("bad", alice.metadata, INVALID, "post_id must be a UUID"),
        (ghost_id(), alice.metadata, NOT_FOUND, "no post with id"),
        (post.id, None, UNAUTHENTICATED, "signed-in user"),
    ]:
        await fails(
            content.LikePost(content_pb2.LikePostRequest(post_id=post_id), metadata=metadata),
            code,
            fragment,
        )
        await fails(
            content.UnlikePost(content_pb2.UnlikePostRequest(post_id=post_id), metadata=metadata),
            code,
            fragment,
        )


async def test_batch_get_post_stats_rejects_empty_oversized_or_malformed_batches(
    content: ContentServiceAsyncStub,
) -> None:
    hundred = [ghost_id() for _ in range(100)]
    response = await content.BatchGetPostStats(
        content_pb2.BatchGetPostStatsRequest(post_ids=hundred)
    )
    assert list(response.missing_ids) == hundred
    for post_ids, fragment in [
        ([], "post_ids must name at least one id"),
        ([*hundred, ghost_id()], "101 ids; at most 100"),
        ([ghost_id(), "x"], "post_ids[1] must be a UUID"),
    ]:
        request = content_pb2.BatchGetPostStatsRequest(post_ids=post_ids)
        await fails(content.BatchGetPostStats(request), INVALID, fragment)
