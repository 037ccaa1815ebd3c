"""The content service's SPEC: what the runtime needs to migrate, serve and call it."""

from pathlib import Path

from grpc import aio

from nova.content.v1 import content_pb2, content_pb2_grpc
from services.content import events
from services.content.cache import GROUP as CACHE_GROUP
from services.content.cache import CachedPosts, invalidation_consumer
from services.content.repository import SCHEMA, ContentRepository
from services.content.servicer import ContentServicer
from services.runtime.events.consumer import Consumer
from services.runtime.spec import (
    Closer,
    ConsumerContext,
    ConsumerSpec,
    Dependencies,
    ServiceSpec,
)
from services.runtime.validation import validated

_SERVICE = content_pb2.DESCRIPTOR.services_by_name["ContentService"]
_MIGRATIONS = Path(__file__).parent / "migrations"


def _add_to_server(server: aio.Server, deps: Dependencies) -> Closer | None:
    repository = ContentRepository(deps.db)
    # No Redis (a process that opened none) or NOVA_CACHE=off: every read goes to PostgreSQL.
    cached = (
        CachedPosts(repository, deps.redis, deps.config.cache)
        if deps.redis is not None and deps.config.cache.enabled
        else None
    )
    servicer = ContentServicer(repository, posts=cached)
    content_pb2_grpc.add_ContentServiceServicer_to_server(validated(servicer, _SERVICE), server)
    return cached.cache.settled if cached is not None else None


def _build_cache_consumer(context: ConsumerContext) -> Consumer:
    if context.redis is None:
        raise RuntimeError("the content-cache consumer needs Redis (its SPEC says uses_redis)")
    return invalidation_consumer(
        Consumer(CACHE_GROUP, context.transport, context.db, context.topics), context.redis
    )


CACHE_CONSUMER = ConsumerSpec(
    group=CACHE_GROUP,
    # Its effects are in Redis; its schema is the service's own (migrated with it).
    schema=SCHEMA,
    migrations=_MIGRATIONS,
    build=_build_cache_consumer,
    uses_redis=True,
)

SPEC = ServiceSpec(
    name="content",
    service=_SERVICE,
    stub=content_pb2_grpc.ContentServiceStub,
    default_port=50052,
    schema=SCHEMA,
    migrations=_MIGRATIONS,
    add_to_server=_add_to_server,
    aggregate_types=(events.AGGREGATE,),
    consumers=(CACHE_CONSUMER,),
    uses_redis=True,
)
