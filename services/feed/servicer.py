"""gRPC surface of nova.feed.v1.FeedService: the caller from the token, the page checked,
the reader asked (reader.py)."""

from typing import Any

from grpc import aio

from nova.feed.v1 import feed_pb2, feed_pb2_grpc
from services.feed.reader import HomeFeed
from services.runtime.auth import require_caller
from services.runtime.errors import InvalidArgument
from services.runtime.pagination import paginate, read_page

Context = aio.ServicerContext[Any, Any]

DEFAULT_PAGE = 20
MAX_PAGE = 100


class FeedServicer(feed_pb2_grpc.FeedServiceServicer):
    def __init__(self, feed: HomeFeed) -> None:
        self._feed = feed

    async def GetHomeFeed(
        self, request: feed_pb2.GetHomeFeedRequest, context: Context
    ) -> feed_pb2.GetHomeFeedResponse:
        caller = require_caller()
        if request.HasField("page") and request.page.page_size == 0:
            # A page asked for must say its size; leaving `page` out is the default.
            raise InvalidArgument(
                f"page.page_size must be 1 to {MAX_PAGE}; leave page out for the default "
                f"of {DEFAULT_PAGE}"
            )
        page = read_page(request.page, default=DEFAULT_PAGE, maximum=MAX_PAGE)
        items = await self._feed.page(caller.tenant_id, caller.user_id, page.after, page.size)
        kept, page_response = paginate(items, page, key=lambda item: item.post_id)
        return feed_pb2.GetHomeFeedResponse(
            items=[
                feed_pb2.FeedItem(post_id=str(item.post_id), author_id=str(item.author_id))
                for item in kept
            ],
            page=page_response,
        )
