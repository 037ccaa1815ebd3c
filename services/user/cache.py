"""The user service's preference cache and the consumer group that invalidates it.

GetPreferences is read on every feed request and written rarely, so its answer lives in
Redis (services.runtime.cache) for NOVA_CACHE_TTL_HOURS. A change deletes it twice: the
writer right after its commit (its own next read sees the change), and the `user-cache`
consumer group on PreferencesUpdated (every process, and a writer whose delete failed or
raced a reader that loaded the old row before the commit and stored it after the delete).

User rows (BatchGetUsers) are not cached: every call is made for a signed-in viewer and
answers `followed_by_viewer`, so a cached row still needs its query of the follows (the
query count stays one; `./dev bench cache` shows it), and the rows' follower counts change
with every follow. Nor is there a profile event to invalidate them by.
"""

from __future__ import annotations

import uuid

import asyncpg
import orjson
from redis.asyncio import Redis

from nova.events.v1 import events_pb2
from services.runtime.cache import Cache, cache_key, forget_key
from services.runtime.cache_settings import CacheSettings
from services.runtime.events.consumer import Consumer
from services.runtime.events.model import Event
from services.user.repository import PreferencesRecord, UserRepository

GROUP = "user-cache"
"""The consumer group that deletes cached entries when their rows change."""
PREFERENCES = "preferences"
"""The cache's name, in its keys: nova:cache:preferences:v1:{<tenant>:<user>}."""


class _PreferencesCodec:
    """orjson of the record's fields: 108 bytes for the defaults, plus the header's 13."""

    def encode(self, value: PreferencesRecord) -> bytes:
        return orjson.dumps(value)

    def decode(self, data: bytes) -> PreferencesRecord:
        fields = orjson.loads(data)
        if not isinstance(fields, dict):
            raise ValueError("cached preferences are not an object")
        return PreferencesRecord(**fields)


class CachedPreferences:
    """The repository's get_preferences through the cache."""

    def __init__(
        self, repository: UserRepository, redis: Redis, settings: CacheSettings | None = None
    ) -> None:
        self._repository = repository
        self.cache: Cache[PreferencesRecord] = Cache(
            PREFERENCES, redis, _PreferencesCodec(), settings
        )

    async def get_preferences(
        self, *, tenant_id: uuid.UUID, user_id: uuid.UUID
    ) -> PreferencesRecord:
        async def load() -> PreferencesRecord:
            return await self._repository.get_preferences(tenant_id=tenant_id, user_id=user_id)

        found = await self.cache.get(tenant_id, str(user_id), load)
        return found if found is not None else PreferencesRecord()

    async def forget(self, *, tenant_id: uuid.UUID, user_id: uuid.UUID) -> None:
        await self.cache.forget(tenant_id, str(user_id))


def invalidation_consumer(consumer: Consumer, redis: Redis) -> Consumer:
    """Registers the group's handler on `consumer`: PreferencesUpdated deletes the user's
    cached preferences. Forgetting is idempotent, so the event's processed record stays
    in PostgreSQL (`Consumer.on`): a processed marker in Redis would live in another
    Redis Cluster slot than the cache key, which one MULTI cannot span."""

    async def preferences_updated(
        conn: asyncpg.Connection, event: Event, envelope: events_pb2.EventEnvelope
    ) -> None:
        payload = events_pb2.PreferencesUpdated()
        if not envelope.payload.Unpack(payload):
            raise ValueError(
                f"the payload is {envelope.payload.TypeName()}, not PreferencesUpdated"
            )
        user_id = str(uuid.UUID(payload.user_id))
        await forget_key(redis, cache_key(PREFERENCES, event.tenant_id, user_id))

    consumer.on("PreferencesUpdated", preferences_updated)
    return consumer
