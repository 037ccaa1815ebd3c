"""The feed service's SPEC: FeedService over the Redis timelines, and the consumer group
that keeps them (fan-out on write) and the feed's projections."""

from pathlib import Path

from grpc import aio

from nova.feed.v1 import feed_pb2, feed_pb2_grpc
from services.feed.fanout import GROUP, Fanout
from services.feed.reader import HomeFeed
from services.feed.repository import SCHEMA, FeedRepository
from services.feed.servicer import FeedServicer
from services.feed.timelines import Timelines
from services.runtime.events.consumer import Consumer
from services.runtime.spec import (
    Closer,
    ConsumerContext,
    ConsumerSpec,
    Dependencies,
    ServiceSpec,
)
from services.runtime.validation import validated

_SERVICE = feed_pb2.DESCRIPTOR.services_by_name["FeedService"]
_MIGRATIONS = Path(__file__).parent / "migrations"


def _add_to_server(server: aio.Server, deps: Dependencies) -> Closer:
    if deps.redis is None:
        raise RuntimeError("the feed service needs Redis (its SPEC says uses_redis)")
    settings = deps.config.feed
    timelines = Timelines.of(deps.redis, settings)
    feed = HomeFeed(FeedRepository(deps.db), timelines, settings)
    feed_pb2_grpc.add_FeedServiceServicer_to_server(validated(FeedServicer(feed), _SERVICE), server)
    return feed.close


def _build_consumer(context: ConsumerContext) -> Consumer:
    if context.redis is None:
        raise RuntimeError("the feed consumer needs Redis (its SPEC says uses_redis)")
    consumer = Consumer(GROUP, context.transport, context.db, topics=context.topics)
    Fanout(context.redis, context.config.feed).register(consumer)
    return consumer


CONSUMER = ConsumerSpec(
    group=GROUP,
    schema=SCHEMA,
    migrations=_MIGRATIONS,
    build=_build_consumer,
    uses_redis=True,
)

SPEC = ServiceSpec(
    name="feed",
    service=_SERVICE,
    stub=feed_pb2_grpc.FeedServiceStub,
    default_port=50053,
    schema=SCHEMA,
    migrations=_MIGRATIONS,
    add_to_server=_add_to_server,
    consumers=(CONSUMER,),
    uses_redis=True,
)
