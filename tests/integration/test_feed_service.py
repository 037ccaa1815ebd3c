"""FeedService over gRPC, fed by the real event path (outbox, relay, the feed's consumer
group): a follow and a post reach the follower's home feed, pages continue with their
tokens, a deletion and an unfollow take posts out, and bad input gets a clear error."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio

from nova.common.v1 import page_pb2
from nova.content.v1 import content_pb2, content_pb2_grpc
from nova.feed.v1 import feed_pb2, feed_pb2_grpc
from nova.user.v1 import user_pb2, user_pb2_grpc
from tests.conftest import EventsSettled, SignedIn, SignUp


def _feed(channels: dict[str, aio.Channel]) -> feed_pb2_grpc.FeedServiceAsyncStub:
    return feed_pb2_grpc.FeedServiceStub(channels["feed"])


async def _page(
    channels: dict[str, aio.Channel], reader: SignedIn, size: int = 20, token: str = ""
) -> feed_pb2.GetHomeFeedResponse:
    return await _feed(channels).GetHomeFeed(
        feed_pb2.GetHomeFeedRequest(page=page_pb2.PageRequest(page_size=size, page_token=token)),
        metadata=reader.metadata,
    )


async def test_posts_of_followed_authors_reach_the_home_feed_newest_first(
    sign_up: SignUp, channels: dict[str, aio.Channel], feed_events: EventsSettled
) -> None:
    users = user_pb2_grpc.UserServiceStub(channels["user"])
    content = content_pb2_grpc.ContentServiceStub(channels["content"])
    reader, author, stranger = await sign_up("fr"), await sign_up("fa"), await sign_up("fs")
    await users.Follow(user_pb2.FollowRequest(user_id=author.user.id), metadata=reader.metadata)
    posted = [
        (
            await content.CreatePost(
                content_pb2.CreatePostRequest(text=f"post {i}"), metadata=author.metadata
            )
        ).post.id
        for i in range(5)
    ]
    await content.CreatePost(
        content_pb2.CreatePostRequest(text="not followed"), metadata=stranger.metadata
    )
    await feed_events()

    first = await _page(channels, reader, size=3)
    assert [item.post_id for item in first.items] == posted[::-1][:3]
    assert {item.author_id for item in first.items} == {author.user.id}
    rest = await _page(channels, reader, size=3, token=first.page.next_page_token)
    assert [item.post_id for item in rest.items] == posted[::-1][3:]
    assert rest.page.next_page_token == ""

    await content.DeletePost(content_pb2.DeletePostRequest(id=posted[-1]), metadata=author.metadata)
    await users.Unfollow(user_pb2.UnfollowRequest(user_id=author.user.id), metadata=reader.metadata)
    await feed_events()
    assert (await _page(channels, reader)).items == []
    own = await _page(channels, author)
    assert [item.post_id for item in own.items] == posted[::-1][1:], "deleted: gone"


async def test_an_anonymous_caller_is_unauthenticated(channels: dict[str, aio.Channel]) -> None:
    with pytest.raises(aio.AioRpcError) as refused:
        await _feed(channels).GetHomeFeed(feed_pb2.GetHomeFeedRequest())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "needs a signed-in user" in (refused.value.details() or "")


@pytest.mark.parametrize(
    ("page", "message"),
    [
        (page_pb2.PageRequest(page_size=0), "page.page_size must be 1 to 100"),
        (page_pb2.PageRequest(page_size=101), "at most 100 is allowed"),
        (page_pb2.PageRequest(page_size=-1), "must not be negative"),
        (page_pb2.PageRequest(page_size=5, page_token="not-a-token"), "not one this method issued"),
    ],
    ids=["zero", "101", "negative", "bad-token"],
)
async def test_bad_pages_are_invalid_arguments(
    sign_up: SignUp, channels: dict[str, aio.Channel], page: page_pb2.PageRequest, message: str
) -> None:
    reader = await sign_up("fb")
    with pytest.raises(aio.AioRpcError) as refused:
        await _feed(channels).GetHomeFeed(
            feed_pb2.GetHomeFeedRequest(page=page), metadata=reader.metadata
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (refused.value.details() or "")


async def test_no_page_means_the_default_of_twenty(
    sign_up: SignUp, channels: dict[str, aio.Channel], feed_events: EventsSettled
) -> None:
    content = content_pb2_grpc.ContentServiceStub(channels["content"])
    author = await sign_up("fd")
    for i in range(21):
        await content.CreatePost(
            content_pb2.CreatePostRequest(text=f"{i}"), metadata=author.metadata
        )
    await feed_events()
    page = await _feed(channels).GetHomeFeed(
        feed_pb2.GetHomeFeedRequest(), metadata=author.metadata
    )
    assert len(page.items) == 20
    assert page.page.next_page_token
