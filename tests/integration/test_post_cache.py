"""The content service's post cache: BatchGetPosts and GetPost served from Redis with no
statement sent, a deleted post never served again (the writer's delete at once, and the
`content-cache` consumer group's through the real event path for an entry stored after
it), missing ids cached as missing, and answers from PostgreSQL when Redis is stopped."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

import grpc
import pytest
from grpc import aio
from redis.asyncio import Redis

from nova.content.v1 import content_pb2, content_pb2_grpc
from services.content.cache import GROUP, POSTS
from services.content.repository import ContentRepository
from services.content.service import SPEC
from services.registry import REGISTRY
from services.runtime.cache import cache_key
from services.runtime.events.workers import consumer_worker, relay_worker, running_events
from services.runtime.ids import DEFAULT_TENANT_ID, new_id
from services.runtime.process import serve
from services.runtime.redis_client import RedisSettings, open_redis
from services.runtime.spec import Dependencies
from tests.bench.cache import CountingDatabase, QueryCounter
from tests.brokers import redis_server
from tests.conftest import SignedIn, SignUp
from tests.integration.test_feed_outage import _port_below_ephemeral_range

if TYPE_CHECKING:
    from nova.content.v1.content_pb2_grpc import ContentServiceAsyncStub

T = TypeVar("T")


@dataclass(frozen=True)
class Counted:
    """A content server of its own, on the session's database and Redis, whose every
    statement is counted."""

    content: ContentServiceAsyncStub
    counter: QueryCounter

    def sent(self) -> int:
        """The statements sent so far (transaction control and asyncpg's type
        introspection left out: QueryCounter)."""
        return self.counter.total()

    async def statements(self, call: Awaitable[T]) -> tuple[T, int]:
        """The call's reply and how many statements it sent."""
        before = self.sent()
        reply = await call
        await asyncio.sleep(0)  # the query logger's callbacks run on the next turn
        return reply, self.sent() - before


@pytest.fixture(scope="module")
async def counted(deps: Dependencies) -> AsyncIterator[Counted]:
    db = CountingDatabase(deps.db.pool, deps.db.acquire_timeout_s, deps.db.exhausted)
    async with serve(replace(deps, db=db), [SPEC], ports={"content": 0}) as (server,):
        channel = aio.insecure_channel(f"127.0.0.1:{server.port}")
        yield Counted(content_pb2_grpc.ContentServiceStub(channel), db.counter)
        await channel.close(None)


@asynccontextmanager
async def _cache_group(deps: Dependencies) -> AsyncIterator[None]:
    """A relay and the content-cache group, started by a test once it has planted what
    the group must delete."""
    workers = {
        "relay": relay_worker(REGISTRY.outbox_schemas, deps.config.events),
        GROUP: consumer_worker(REGISTRY.consumers[GROUP], REGISTRY.topics, deps.config, deps.redis),
    }
    async with running_events(deps.db, deps.config.events, workers):
        yield


def _key(post_id: str) -> str:
    return cache_key(POSTS, DEFAULT_TENANT_ID, post_id)


def _redis(deps: Dependencies) -> Redis:
    assert deps.redis is not None
    return deps.redis


async def _publish(content: ContentServiceAsyncStub, author: SignedIn, text: str) -> str:
    reply = await content.CreatePost(
        content_pb2.CreatePostRequest(text=text), metadata=author.metadata
    )
    return reply.post.id


async def _change_text_behind_the_cache(deps: Dependencies, post_id: str, text: str) -> None:
    """What no RPC can do (posts are immutable): shows whether an answer came from Redis."""
    async with deps.db.connection() as conn:
        await conn.execute(
            "UPDATE content_service.posts SET text = $2 WHERE id = $1", uuid.UUID(post_id), text
        )


def _batch(*ids: str) -> content_pb2.BatchGetPostsRequest:
    return content_pb2.BatchGetPostsRequest(ids=list(ids))


def test_the_content_service_owns_the_invalidating_group_and_uses_redis() -> None:
    assert SPEC.uses_redis
    assert [group.group for group in SPEC.consumers] == [GROUP]
    assert REGISTRY.consumers[GROUP].uses_redis


async def test_warm_batch_get_posts_and_get_post_send_no_statement(
    sign_up: SignUp, counted: Counted, deps: Dependencies
) -> None:
    ada = await sign_up("ada")
    ids = [await _publish(counted.content, ada, f"post {n}") for n in range(3)]
    asked = [ids[2], ids[0], ids[2], ids[1]]  # answered in first-seen order, once each

    cold, statements = await counted.statements(counted.content.BatchGetPosts(_batch(*asked)))
    assert [post.id for post in cold.posts] == [ids[2], ids[0], ids[1]]
    assert statements == 1
    assert await _redis(deps).exists(*(_key(i) for i in ids)) == 3

    await _change_text_behind_the_cache(deps, ids[0], "changed in PostgreSQL")
    warm, statements = await counted.statements(counted.content.BatchGetPosts(_batch(*asked)))
    assert statements == 0
    assert warm == cold  # every field, from Redis: PostgreSQL's text has changed
    one, statements = await counted.statements(
        counted.content.GetPost(content_pb2.GetPostRequest(id=ids[0]))
    )
    assert (statements, one.post) == (0, cold.posts[1])
    assert one.post.text == "post 0"

    # Half warm: one query, for the id Redis lacks only.
    fourth = await _publish(counted.content, ada, "post 3")
    mixed, statements = await counted.statements(
        counted.content.BatchGetPosts(_batch(ids[1], fourth))
    )
    assert [post.text for post in mixed.posts] == ["post 1", "post 3"]
    assert statements == 1


async def test_cached_posts_are_the_messages_postgres_gives(
    sign_up: SignUp, counted: Counted, deps: Dependencies
) -> None:
    """The codec keeps every field: a cached answer equals the one read without Redis."""
    grace = await sign_up("grace")
    post_id = await _publish(counted.content, grace, "ação, 漢字, 🎉 and a\nnewline")
    from_postgres = await ContentRepository(deps.db).get_posts(
        tenant_id=DEFAULT_TENANT_ID, post_ids=[uuid.UUID(post_id)]
    )
    await counted.content.BatchGetPosts(_batch(post_id))
    cached, statements = await counted.statements(counted.content.BatchGetPosts(_batch(post_id)))
    assert statements == 0
    (post,) = cached.posts
    record = from_postgres[uuid.UUID(post_id)]
    assert (post.id, post.author_id, post.text) == (str(record.id), grace.user.id, record.text)
    assert post.created_at.ToDatetime(record.created_at.tzinfo) == record.created_at


async def test_missing_ids_are_cached_as_missing(counted: Counted, deps: Dependencies) -> None:
    unknown = str(new_id())
    for expected_statements in (1, 0):
        reply, statements = await counted.statements(counted.content.BatchGetPosts(_batch(unknown)))
        assert (list(reply.missing_ids), len(reply.posts)) == ([unknown], 0)
        assert statements == expected_statements
    assert await _redis(deps).exists(_key(unknown)) == 1

    other = str(new_id())
    for expected_statements in (1, 0):
        before = counted.sent()
        with pytest.raises(aio.AioRpcError) as error:
            await counted.content.GetPost(content_pb2.GetPostRequest(id=other))
        await asyncio.sleep(0)
        assert counted.sent() - before == expected_statements
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        assert error.value.details() == f"no post with id {other}"
    _, statements = await counted.statements(counted.content.BatchGetPosts(_batch(other)))
    assert statements == 0, "GetPost's negative entry serves BatchGetPosts too"


async def test_a_deleted_post_is_gone_at_once_through_the_writers_delete(
    sign_up: SignUp, counted: Counted, deps: Dependencies
) -> None:
    alan = await sign_up("alan")
    kept, deleted = [await _publish(counted.content, alan, text) for text in ("kept", "gone")]
    await counted.content.BatchGetPosts(_batch(kept, deleted))
    await counted.content.GetPost(content_pb2.GetPostRequest(id=deleted))
    assert await _redis(deps).exists(_key(deleted)) == 1

    await counted.content.DeletePost(
        content_pb2.DeletePostRequest(id=deleted), metadata=alan.metadata
    )
    # No consumer group runs here: only the writer's own delete can have removed it.
    after = await counted.content.BatchGetPosts(_batch(kept, deleted))
    assert ([post.id for post in after.posts], list(after.missing_ids)) == ([kept], [deleted])
    with pytest.raises(aio.AioRpcError) as error:
        await counted.content.GetPost(content_pb2.GetPostRequest(id=deleted))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_group_deletes_an_entry_stored_after_the_writers_delete(
    sign_up: SignUp, counted: Counted, deps: Dependencies
) -> None:
    barbara = await sign_up("barbara")
    post_id = await _publish(counted.content, barbara, "soon gone")
    await counted.content.BatchGetPosts(_batch(post_id))
    redis, key = _redis(deps), _key(post_id)
    before_delete = await redis.get(key)
    assert before_delete is not None

    await counted.content.DeletePost(
        content_pb2.DeletePostRequest(id=post_id), metadata=barbara.metadata
    )
    # A reader that loaded the row before the commit stores it after the writer's delete.
    await redis.set(key, before_delete)
    stale = await counted.content.BatchGetPosts(_batch(post_id))
    assert [post.id for post in stale.posts] == [post_id], "the planted entry is served"

    async with _cache_group(deps):  # the relay and the group start now
        deadline = time.monotonic() + 20
        while await redis.get(key) == before_delete:
            assert time.monotonic() < deadline, "the content-cache group did not delete it"
            await asyncio.sleep(0.005)
    after = await counted.content.BatchGetPosts(_batch(post_id))
    assert (len(after.posts), list(after.missing_ids)) == (0, [post_id])

    async with deps.db.connection() as conn:
        processed = await conn.fetchval(
            """SELECT count(*) FROM nova_events.processed_events p
                 JOIN content_service.outbox o USING (event_id)
                WHERE p.group_name = $1 AND o.aggregate_id = $2
                  AND o.event_type = 'PostDeleted'""",
            GROUP,
            post_id,
        )
    assert processed == 1, "the event is recorded as processed, in PostgreSQL"


async def test_posts_are_read_from_postgres_while_redis_is_stopped(
    sign_up: SignUp, deps: Dependencies
) -> None:
    async with AsyncExitStack() as outer:
        redis_process = AsyncExitStack()
        url = await redis_process.enter_async_context(
            redis_server(port=_port_below_ephemeral_range())
        )
        client = await outer.enter_async_context(
            open_redis(url, RedisSettings(timeout_seconds=0.5))
        )
        db = CountingDatabase(deps.db.pool, deps.db.acquire_timeout_s, deps.db.exhausted)
        (server,) = await outer.enter_async_context(
            serve(replace(deps, db=db, redis=client), [SPEC], ports={"content": 0})
        )
        channel = aio.insecure_channel(f"127.0.0.1:{server.port}")
        outer.push_async_callback(channel.close, None)
        content: ContentServiceAsyncStub = content_pb2_grpc.ContentServiceStub(channel)
        own = Counted(content, db.counter)

        edsger = await sign_up("edsger")
        first, second = [await _publish(content, edsger, text) for text in ("one", "two")]
        await content.BatchGetPosts(_batch(first, second))
        _, statements = await own.statements(content.BatchGetPosts(_batch(first, second)))
        assert statements == 0, "warm before Redis stops"

        await redis_process.aclose()
        await _change_text_behind_the_cache(deps, first, "one, from PostgreSQL")
        reply, statements = await own.statements(content.BatchGetPosts(_batch(first, second)))
        assert [post.text for post in reply.posts] == ["one, from PostgreSQL", "two"]
        assert statements == 1, "Redis is gone: the database answered"
        got = await content.GetPost(content_pb2.GetPostRequest(id=second))
        assert got.post.text == "two"
        await content.DeletePost(content_pb2.DeletePostRequest(id=second), metadata=edsger.metadata)
        after = await content.BatchGetPosts(_batch(first, second))
        assert ([post.id for post in after.posts], list(after.missing_ids)) == ([first], [second])
