"""The user service's preference cache: GetPreferences served from Redis until a change
deletes the entry, by the writer at once and by the `user-cache` consumer group through
the real event path (outbox, relay, log, consumer's MULTI/EXEC), and served from
PostgreSQL when Redis is stopped."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis

from nova.user.v1 import user_pb2
from services.registry import REGISTRY
from services.runtime.cache import cache_key
from services.runtime.events.workers import consumer_worker, relay_worker, running_events
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.redis_client import RedisSettings, open_redis
from services.runtime.spec import Dependencies
from services.user.cache import GROUP, PREFERENCES, CachedPreferences
from services.user.repository import UserRepository
from services.user.service import SPEC
from tests.brokers import redis_server
from tests.conftest import SignUp

if TYPE_CHECKING:
    from nova.user.v1.user_pb2_grpc import UserServiceAsyncStub


@pytest.fixture(scope="module")
async def cache_group(deps: Dependencies) -> AsyncIterator[None]:
    """A relay and the user-cache consumer group, running on the session's database and
    Redis for this module's tests."""
    workers = {
        "relay": relay_worker(REGISTRY.outbox_schemas, deps.config.events),
        GROUP: consumer_worker(REGISTRY.consumers[GROUP], REGISTRY.topics, deps.config, deps.redis),
    }
    async with running_events(deps.db, deps.config.events, workers):
        yield


def _key(user_id: str) -> str:
    return cache_key(PREFERENCES, DEFAULT_TENANT_ID, user_id)


def _redis(deps: Dependencies) -> Redis:
    assert deps.redis is not None
    return deps.redis


async def _set_language_behind_the_cache(deps: Dependencies, user_id: str, language: str) -> None:
    """A change no event reports: what only the cache's TTL would bound."""
    async with deps.db.connection() as conn:
        await conn.execute(
            "UPDATE user_service.preferences SET language = $2 WHERE user_id = $1",
            uuid.UUID(user_id),
            language,
        )


def test_the_user_service_owns_the_invalidating_group_and_uses_redis() -> None:
    assert SPEC.uses_redis
    assert [group.group for group in SPEC.consumers] == [GROUP]
    assert REGISTRY.consumers[GROUP].uses_redis


async def test_preferences_are_served_from_the_cache_until_the_writer_deletes_them(
    sign_up: SignUp, users: UserServiceAsyncStub, deps: Dependencies
) -> None:
    ada = await sign_up("ada")
    await users.UpdatePreferences(
        user_pb2.UpdatePreferencesRequest(
            preferences=user_pb2.Preferences(language="pt-BR"), update_mask={"paths": ["language"]}
        ),
        metadata=ada.metadata,
    )
    first = await users.GetPreferences(user_pb2.GetPreferencesRequest(), metadata=ada.metadata)
    assert first.preferences.language == "pt-BR"
    assert await _redis(deps).exists(_key(ada.user.id)) == 1

    await _set_language_behind_the_cache(deps, ada.user.id, "de")
    cached = await users.GetPreferences(user_pb2.GetPreferencesRequest(), metadata=ada.metadata)
    assert cached.preferences.language == "pt-BR"  # from Redis: PostgreSQL says "de"

    await users.UpdatePreferences(
        user_pb2.UpdatePreferencesRequest(
            preferences=user_pb2.Preferences(time_zone="Europe/Lisbon"),
            update_mask={"paths": ["time_zone"]},
        ),
        metadata=ada.metadata,
    )
    fresh = await users.GetPreferences(user_pb2.GetPreferencesRequest(), metadata=ada.metadata)
    assert (fresh.preferences.language, fresh.preferences.time_zone) == ("de", "Europe/Lisbon")


async def test_a_preferences_updated_event_deletes_the_entry_through_the_event_path(
    sign_up: SignUp, users: UserServiceAsyncStub, deps: Dependencies, cache_group: None
) -> None:
    grace = await sign_up("grace")
    user_id = uuid.UUID(grace.user.id)
    before = await users.GetPreferences(user_pb2.GetPreferencesRequest(), metadata=grace.metadata)
    assert before.preferences.language == "en"
    redis, key = _redis(deps), _key(grace.user.id)
    assert await redis.exists(key) == 1

    # Written as another process would: the commit and its outbox row, no delete here.
    await UserRepository(deps.db).update_preferences(
        tenant_id=DEFAULT_TENANT_ID, user_id=user_id, changes={"language": "fr"}
    )
    committed = time.monotonic()
    deadline = committed + 20
    while await redis.exists(key):
        assert time.monotonic() < deadline, "the event did not delete the cached entry"
    lag = time.monotonic() - committed
    after = await users.GetPreferences(user_pb2.GetPreferencesRequest(), metadata=grace.metadata)
    assert after.preferences.language == "fr"
    assert lag < 20

    async with deps.db.connection() as conn:
        event_id = await conn.fetchval(
            """SELECT event_id FROM user_service.outbox
                WHERE aggregate_id = $1 AND event_type = 'PreferencesUpdated'""",
            str(user_id),
        )
    async with deps.db.connection() as conn:
        processed = await conn.fetchval(
            """SELECT count(*) FROM nova_events.processed_events
                WHERE group_name = $1 AND event_id = $2""",
            GROUP,
            event_id,
        )
    assert processed == 1, "the event is recorded as processed, in PostgreSQL"


async def test_preferences_are_read_from_postgres_while_redis_is_stopped(
    sign_up: SignUp, users: UserServiceAsyncStub, deps: Dependencies
) -> None:
    alan = await sign_up("alan")
    user_id = uuid.UUID(alan.user.id)
    await users.UpdatePreferences(
        user_pb2.UpdatePreferencesRequest(
            preferences=user_pb2.Preferences(language="nl"), update_mask={"paths": ["language"]}
        ),
        metadata=alan.metadata,
    )
    async with AsyncExitStack() as outer:
        server = AsyncExitStack()
        url = await server.enter_async_context(redis_server())
        client = await outer.enter_async_context(open_redis(url, RedisSettings()))
        cached = CachedPreferences(UserRepository(deps.db), client)
        read = await cached.get_preferences(tenant_id=DEFAULT_TENANT_ID, user_id=user_id)
        assert read.language == "nl"

        await server.aclose()
        await _set_language_behind_the_cache(deps, alan.user.id, "sv")
        read = await cached.get_preferences(tenant_id=DEFAULT_TENANT_ID, user_id=user_id)
        assert read.language == "sv"  # Redis is gone: the database answered
        assert cached.cache.stats.bypassed == 1
