"""The user service's SPEC: what the runtime needs to migrate, serve and call it."""

from pathlib import Path

from grpc import aio

from nova.user.v1 import user_pb2, user_pb2_grpc
from services.runtime.events.consumer import Consumer
from services.runtime.spec import (
    Closer,
    ConsumerContext,
    ConsumerSpec,
    Dependencies,
    ServiceSpec,
)
from services.runtime.validation import validated
from services.user import events
from services.user.cache import GROUP as CACHE_GROUP
from services.user.cache import CachedPreferences, invalidation_consumer
from services.user.passwords import Passwords
from services.user.repository import SCHEMA, UserRepository
from services.user.servicer import UserServicer
from services.user.sign_in_limits import SignInLimits

_SERVICE = user_pb2.DESCRIPTOR.services_by_name["UserService"]
_MIGRATIONS = Path(__file__).parent / "migrations"


def _add_to_server(server: aio.Server, deps: Dependencies) -> Closer | None:
    sign_in = deps.config.sign_in
    passwords = Passwords.for_profile(
        deps.config.password_hash_profile,
        concurrency=sign_in.hash_concurrency,
        queue=sign_in.hash_queue,
    )
    repository = UserRepository(deps.db)
    # No Redis (a process that opened none) or NOVA_CACHE=off: every read goes to PostgreSQL.
    cached = (
        CachedPreferences(repository, deps.redis, deps.config.cache)
        if deps.redis is not None and deps.config.cache.enabled
        else None
    )
    servicer = UserServicer(
        repository, passwords, deps.tokens, SignInLimits(sign_in), preferences=cached
    )
    user_pb2_grpc.add_UserServiceServicer_to_server(validated(servicer, _SERVICE), server)
    return cached.cache.settled if cached is not None else None


def _build_cache_consumer(context: ConsumerContext) -> Consumer:
    if context.redis is None:
        raise RuntimeError("the user-cache consumer needs Redis (its SPEC says uses_redis)")
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
    name="user",
    service=_SERVICE,
    stub=user_pb2_grpc.UserServiceStub,
    default_port=50051,
    schema=SCHEMA,
    migrations=_MIGRATIONS,
    add_to_server=_add_to_server,
    aggregate_types=(events.AGGREGATE,),
    consumers=(CACHE_CONSUMER,),
    uses_redis=True,
)
