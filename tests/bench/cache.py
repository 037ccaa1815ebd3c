"""`./dev bench cache`: what the preference and post caches save the database, and how
soon a change reaches them.

Every service, the relay and the consumer groups (feed, user-cache, content-cache) run in
this process on an embedded PostgreSQL (or NOVA_DATABASE_URL) and an embedded Redis, seeded
through the gRPC APIs. The RPCs' pool is wrapped to count the statements each one sends
(asyncpg's query logger; pg_stat_statements is not available, and pg_stat_database's
counters also count the relay's and consumers' polling), transaction control (BEGIN,
COMMIT, savepoints) and asyncpg's type introspection on a connection's first array left
out. The event workers have a pool of their own, not counted.
What is counted does not depend on where the calls come from, so the callers share the
process; latency is not measured here (`./dev bench rpc` and `./dev bench feed` do, in
subprocesses).

1. 1,000 concurrent misses on one key: 1,000 tasks at once on the cache itself, then
   1,000 GetPreferences RPCs at once, against the cache and against a second user server
   without it: database loads and errors.
2. Statements per feed request: the RPCs the gateway makes for a 20-post home feed with
   authors, stats and 3 comments (GetHomeFeed, BatchGetPosts with the stats and comments,
   BatchGetUsers) plus the viewer's GetPreferences, made one request at
   a time per seeded user, per RPC: against a user and a content server without the
   caches, then against the ones with them, cold (both caches emptied) and warm.
3. Commit to invalidation: a preferences change committed (with its outbox row, as any
   writer does) until the user-cache group's delete has removed the cached entry: relay,
   PostgreSQL log, consumer, DEL; p50, p99 and max. Then the same for seeded posts
   deleted (PostDeleted, the content-cache group).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import asyncpg
import click
import grpc
from grpc import aio
from redis.asyncio import Redis
from rich.progress import Progress
from rich.table import Table

from nova.common.v1 import page_pb2
from nova.content.v1 import content_pb2, content_pb2_grpc
from nova.feed.v1 import feed_pb2, feed_pb2_grpc
from nova.user.v1 import user_pb2, user_pb2_grpc
from services.cli.seed import DemoUser, Seeded, SeedPlan, seed
from services.content.cache import GROUP as POST_CACHE_GROUP
from services.content.cache import POSTS
from services.content.repository import ContentRepository
from services.feed.fanout import GROUP as FEED_GROUP
from services.registry import REGISTRY
from services.runtime.cache import cache_key
from services.runtime.config import Config
from services.runtime.db import Database
from services.runtime.events.workers import consumer_worker, relay_worker, running_events
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.process import (
    database_url,
    migrate_services,
    open_dependencies,
    open_event_database,
    redis_url,
    serve,
)
from services.runtime.spec import Dependencies
from services.user.cache import GROUP as CACHE_GROUP
from services.user.cache import CachedPreferences
from services.user.repository import UserRepository
from tests.bench.harness import console, open_channels, run

T = TypeVar("T")

PAGE = 20
POSTS_PER_USER = 3
COMMENTS = 3
_TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
_DRIVER_INTROSPECTION = (
    "WITH RECURSIVE TYPEINFO_TREE",
    "SELECT CURRENT_SETTING('JIT')",
    "SELECT SET_CONFIG('JIT'",
)
"""What asyncpg sends itself the first time a connection meets a type (uuid[]): one
connection's first use, not the RPC's work, so a count would depend on which of the
pool's connections a call happened to get."""
_INVALIDATION_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class CacheBench:
    users: int
    """Demo users to seed; each makes one feed request per variant."""
    concurrent: int
    """Calls at once on one cold key."""
    invalidations: int
    """Preference changes timed from commit to the cached entry's delete."""


@dataclass
class QueryCounter:
    """Statements sent on the counted pool, by the first words of their SQL."""

    statements: Counter[str] = field(default_factory=Counter)

    def record(self, logged: object) -> None:
        query = " ".join(str(getattr(logged, "query", "")).split())
        if not query.upper().startswith(_TRANSACTION_CONTROL + _DRIVER_INTROSPECTION):
            self.statements[query] += 1

    def total(self) -> int:
        return sum(self.statements.values())

    def on(self, table: str) -> int:
        return sum(n for query, n in self.statements.items() if table in query)


@dataclass(frozen=True)
class CountingDatabase(Database):
    """The RPCs' pool, with every statement of every connection it lends counted."""

    counter: QueryCounter = field(default_factory=QueryCounter)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        async with super().connection() as conn:
            conn.add_query_logger(self.counter.record)
            try:
                yield conn
            finally:
                conn.remove_query_logger(self.counter.record)


@dataclass(frozen=True)
class Stack:
    """What the scenarios call: the services with the cache, a user server without it."""

    deps: Dependencies
    counter: QueryCounter
    channels: Mapping[str, list[aio.Channel]]
    """By service name; "user-uncached" and "content-uncached" are the servers without
    the caches."""
    seeded: Seeded


async def bench_cache(options: CacheBench) -> None:
    out = console()
    async with _stack(options) as stack:
        out.print(f"bench: {options.concurrent} concurrent misses on one key")
        misses = await _concurrent_misses(stack, options.concurrent)
        out.print(f"bench: statements per feed request, {len(stack.seeded.users)} users")
        per_rpc = await _feed_statements(stack)
        out.print(f"bench: commit to invalidation, {options.invalidations} changes")
        lags = {
            "outbox, relay, log, user-cache group": await _invalidation_lags(
                stack, options.invalidations
            ),
            "outbox, relay, log, content-cache group": await _deletion_lags(
                stack, options.invalidations
            ),
        }
    out.print(_misses_table(misses, options.concurrent))
    out.print(_feed_table(per_rpc, len(stack.seeded.users)))
    out.print(_lag_table(lags, options.invalidations))


CACHED_PATH = ("user", "content", "feed")
"""The services a feed request and the invalidations go through."""


@asynccontextmanager
async def _stack(options: CacheBench) -> AsyncIterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="nova-bench-cache-") as folder:
        env = dict(os.environ)
        env.update(
            NOVA_DATA_DIR=str(Path(folder) / "data"),
            NOVA_BIND_HOST="127.0.0.1",
            NOVA_PASSWORD_HASH_PROFILE="insecure-fast",
            NOVA_SHUTDOWN_GRACE_SECONDS="0",
            NOVA_ACCESS_LOG="off",  # thousands of lines, none of them what is measured
        )
        env.pop("NOVA_REDIS_URL", None)  # its own Redis: the bench deletes and counts keys
        config = Config.from_env(env, default_ports=REGISTRY.default_ports)
        async with AsyncExitStack() as stack:
            dsn = await stack.enter_async_context(database_url(config))
            redis_at = await stack.enter_async_context(redis_url(config))
            deps = await stack.enter_async_context(
                open_dependencies(config, dsn=dsn, with_redis=True, redis_address=redis_at)
            )
            await migrate_services(deps.db, REGISTRY.services.values(), REGISTRY.consumers.values())
            counted = CountingDatabase(deps.db.pool, deps.db.acquire_timeout_s, deps.db.exhausted)
            events_db = await stack.enter_async_context(open_event_database(config, dsn))
            workers = {
                "relay": relay_worker(REGISTRY.outbox_schemas, config.events),
                **{
                    group: consumer_worker(
                        REGISTRY.consumers[group], REGISTRY.topics, config, deps.redis
                    )
                    for group in (FEED_GROUP, CACHE_GROUP, POST_CACHE_GROUP)
                },
            }
            await stack.enter_async_context(running_events(events_db, config.events, workers))
            with_cache = replace(deps, db=counted)
            servers = await stack.enter_async_context(
                # Not analytics: its batcher's polling would be counted as the feed's.
                serve(
                    with_cache,
                    [REGISTRY.services[name] for name in CACHED_PATH],
                    ports=dict.fromkeys(CACHED_PATH, 0),
                )
            )
            addresses = {s.spec.name: f"127.0.0.1:{s.port}" for s in servers}
            without = replace(
                with_cache, config=replace(config, cache=replace(config.cache, enabled=False))
            )
            for name in ("user", "content"):
                (uncached,) = await stack.enter_async_context(
                    serve(without, [REGISTRY.services[name]], ports={name: 0})
                )
                addresses[f"{name}-uncached"] = f"127.0.0.1:{uncached.port}"
            with Progress(console=console()) as progress:
                seeded = await seed(
                    addresses,
                    SeedPlan(
                        users=options.users,
                        posts_per_user=POSTS_PER_USER,
                        follows_per_user=10,
                        comments_per_post=2,
                        likes_per_post=2,
                    ),
                    progress=progress,
                )
            channels = {
                name: await stack.enter_async_context(open_channels(address))
                for name, address in addresses.items()
            }
            yield Stack(deps, counted.counter, channels, seeded)


@dataclass(frozen=True)
class Misses:
    variant: str
    calls: int
    loads: int
    """Statements on user_service.preferences: the database loads."""
    errors: Counter[str]


async def _concurrent_misses(stack: Stack, concurrent: int) -> list[Misses]:
    counter, redis = stack.counter, _redis(stack)
    users = _rotate(stack.seeded.users)
    rows: list[Misses] = []

    # On the cache itself: every task asks at the same moment.
    user = users()
    cached = CachedPreferences(
        UserRepository(
            CountingDatabase(
                stack.deps.db.pool,
                stack.deps.db.acquire_timeout_s,
                stack.deps.db.exhausted,
                counter,
            )
        ),
        redis,
        stack.deps.config.cache,
    )
    await cached.forget(tenant_id=DEFAULT_TENANT_ID, user_id=uuid.UUID(user.id))
    before = counter.on("user_service.preferences")
    results = await asyncio.gather(
        *(
            cached.get_preferences(tenant_id=DEFAULT_TENANT_ID, user_id=uuid.UUID(user.id))
            for _ in range(concurrent)
        ),
        return_exceptions=True,
    )
    rows.append(
        Misses(
            "cache, tasks in this process",
            concurrent,
            counter.on("user_service.preferences") - before,
            _errors(results),
        )
    )

    for variant, service in (
        ("cache, GetPreferences RPCs", "user"),
        ("no cache, GetPreferences RPCs", "user-uncached"),
    ):
        user = users()
        await redis.delete(cached.cache.key(DEFAULT_TENANT_ID, user.id))
        stubs = _rotate([user_pb2_grpc.UserServiceStub(c) for c in stack.channels[service]])
        before = counter.on("user_service.preferences")
        replies = await asyncio.gather(
            *(
                stubs().GetPreferences(
                    user_pb2.GetPreferencesRequest(), metadata=user.metadata, timeout=30
                )
                for _ in range(concurrent)
            ),
            return_exceptions=True,
        )
        rows.append(
            Misses(
                variant,
                concurrent,
                counter.on("user_service.preferences") - before,
                _errors(replies),
            )
        )
    return rows


FEED_RPCS = (
    "GetHomeFeed",
    "BatchGetPosts",
    "BatchGetUsers",
    "GetPreferences",
)


async def _feed_statements(stack: Stack) -> dict[str, dict[str, int]]:
    """Statements per RPC over one feed request per user: variant -> RPC -> total."""
    redis = _redis(stack)
    results: dict[str, dict[str, int]] = {}
    variants = (
        ("warm-up (not shown)", "-uncached"),
        ("no cache", "-uncached"),
        ("cache, first read", ""),
        ("cache, warm", ""),
    )
    for variant, servers in variants:
        if variant == "cache, first read":
            for cache in ("preferences", "posts"):
                async for key in redis.scan_iter(match=f"nova:cache:{cache}:*"):
                    await redis.delete(key)
        totals: Counter[str] = Counter()
        for user in stack.seeded.users:
            for rpc, statements in (await _feed_request(stack, user, servers)).items():
                totals[rpc] += statements
        results[variant] = dict(totals)
        await _quiet(stack.counter)
    del results["warm-up (not shown)"]
    return results


async def _quiet(counter: QueryCounter, seconds: float = 0.2) -> None:
    """Waits until no statement has been counted for `seconds`: GetHomeFeed records a
    user's first read in the background (the feed's `touch`), and a write that lands after
    its variant's last request would be counted against the next variant's."""
    while True:
        before = counter.total()
        await asyncio.sleep(seconds)
        if counter.total() == before:
            return


async def _feed_request(stack: Stack, user: DemoUser, servers: str) -> dict[str, int]:
    """The feed request's RPCs one after another, each one's statements counted; `servers`
    is "-uncached" for the user and content servers without the caches, else ""."""
    meta = user.metadata
    feed = feed_pb2_grpc.FeedServiceStub(stack.channels["feed"][0])
    content = content_pb2_grpc.ContentServiceStub(stack.channels[f"content{servers}"][0])
    users = user_pb2_grpc.UserServiceStub(stack.channels[f"user{servers}"][0])
    counted: dict[str, int] = {}

    async def count(rpc: str, call: Awaitable[T]) -> T:
        before = stack.counter.total()
        reply = await call
        await asyncio.sleep(0)  # the query logger's callbacks run on the next turn
        counted[rpc] = stack.counter.total() - before
        return reply

    page = await count(
        "GetHomeFeed",
        feed.GetHomeFeed(
            feed_pb2.GetHomeFeedRequest(page=page_pb2.PageRequest(page_size=PAGE)), metadata=meta
        ),
    )
    posts = [item.post_id for item in page.items]
    people = {item.author_id for item in page.items}
    posted = await count(
        "BatchGetPosts",
        content.BatchGetPosts(
            content_pb2.BatchGetPostsRequest(
                ids=posts, include_stats=True, comments_per_post=COMMENTS
            ),
            metadata=meta,
        ),
    )
    people |= {c.author_id for entry in posted.comments for c in entry.comments}
    await count(
        "BatchGetUsers",
        users.BatchGetUsers(user_pb2.BatchGetUsersRequest(ids=sorted(people)), metadata=meta),
    )
    await count(
        "GetPreferences", users.GetPreferences(user_pb2.GetPreferencesRequest(), metadata=meta)
    )
    return counted


async def _invalidation_lags(stack: Stack, changes: int) -> list[float]:
    """Seconds from a preferences commit to its cached entry's delete by the consumer."""
    redis = _redis(stack)
    repository = UserRepository(stack.deps.db)
    users = _rotate(stack.seeded.users)
    stubs = user_pb2_grpc.UserServiceStub(stack.channels["user"][0])
    lags = []
    for number in range(changes):
        user = users()
        key = f"nova:cache:preferences:v1:{{{DEFAULT_TENANT_ID}:{user.id}}}"
        await stubs.GetPreferences(user_pb2.GetPreferencesRequest(), metadata=user.metadata)
        if not await redis.exists(key):
            raise click.ClickException(f"GetPreferences left no cache entry at {key}")
        await repository.update_preferences(
            tenant_id=DEFAULT_TENANT_ID,
            user_id=uuid.UUID(user.id),
            changes={"language": ("pt", "de")[number % 2]},
        )
        committed = time.perf_counter()
        while await redis.exists(key):
            if time.perf_counter() - committed > _INVALIDATION_TIMEOUT_SECONDS:
                raise click.ClickException("the user-cache group did not delete the entry in 30 s")
            await asyncio.sleep(0.0005)
        lags.append(time.perf_counter() - committed)
    return lags


async def _deletion_lags(stack: Stack, deletes: int) -> list[float]:
    """Seconds from a post's delete commit to its cached entry's delete by the
    content-cache group (the writer's own delete left out: the repository is called
    directly, as by another process). The bench's last phase: it deletes seeded posts."""
    redis = _redis(stack)
    repository = ContentRepository(stack.deps.db)
    content = content_pb2_grpc.ContentServiceStub(stack.channels["content"][0])
    authors = [user for user in stack.seeded.users for _ in range(POSTS_PER_USER)]
    lags = []
    for post_id, author in list(zip(stack.seeded.post_ids, authors, strict=True))[:deletes]:
        key = cache_key(POSTS, DEFAULT_TENANT_ID, post_id)
        await content.GetPost(content_pb2.GetPostRequest(id=post_id))
        if not await redis.exists(key):
            raise click.ClickException(f"GetPost left no cache entry at {key}")
        await repository.delete_post(
            tenant_id=DEFAULT_TENANT_ID,
            post_id=uuid.UUID(post_id),
            author_id=uuid.UUID(author.id),
        )
        committed = time.perf_counter()
        while await redis.exists(key):
            if time.perf_counter() - committed > _INVALIDATION_TIMEOUT_SECONDS:
                raise click.ClickException("the content-cache group left the entry for 30 s")
            await asyncio.sleep(0.0005)
        lags.append(time.perf_counter() - committed)
    return lags


def _misses_table(rows: list[Misses], concurrent: int) -> Table:
    table = Table(
        title=f"{concurrent} reads at once of one cold key (goal: 1 database load)",
        title_justify="left",
    )
    for heading, justify in (
        ("variant", "left"),
        ("calls", "right"),
        ("database loads", "right"),
        ("errors", "left"),
    ):
        table.add_column(heading, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        errors = ", ".join(f"{code} {n}" for code, n in row.errors.items()) or "0"
        table.add_row(row.variant, str(row.calls), str(row.loads), errors)
    return table


def _feed_table(per_rpc: dict[str, dict[str, int]], requests: int) -> Table:
    table = Table(
        title=f"database statements per feed request ({requests} requests each)",
        title_justify="left",
    )
    table.add_column("rpc")
    variants = list(per_rpc)
    for variant in variants:
        table.add_column(variant, justify="right")
    for rpc in FEED_RPCS:
        table.add_row(rpc, *(f"{per_rpc[v].get(rpc, 0) / requests:.2f}" for v in variants))
    totals = [sum(per_rpc[v].values()) / requests for v in variants]
    table.add_row("total", *(f"{total:.2f}" for total in totals))
    baseline = totals[0]
    table.add_row(
        "change",
        *(f"{(total - baseline) / baseline * 100:+.0f}%" if baseline else "-" for total in totals),
    )
    return table


def _lag_table(paths: Mapping[str, list[float]], changes: int) -> Table:
    table = Table(
        title=f"commit to invalidation, up to {changes} changes each (goal: under 1 s)",
        title_justify="left",
    )
    table.add_column("path")
    for heading in ("changes", "p50 ms", "p99 ms", "max ms"):
        table.add_column(heading, justify="right")
    for path, lags in paths.items():
        ordered = sorted(lags)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        table.add_row(
            path,
            str(len(ordered)),
            *(f"{value * 1000:.1f}" for value in (statistics.median(ordered), p99, ordered[-1])),
        )
    return table


def _errors(results: Sequence[object]) -> Counter[str]:
    errors: Counter[str] = Counter()
    for result in results:
        if isinstance(result, aio.AioRpcError):
            code = result.code()
            errors[code.name if isinstance(code, grpc.StatusCode) else str(code)] += 1
        elif isinstance(result, BaseException):
            errors[type(result).__name__] += 1
    return errors


def _redis(stack: Stack) -> Redis:
    if stack.deps.redis is None:
        raise click.ClickException("the bench opened no Redis")
    return stack.deps.redis


def _rotate(items: Sequence[T]) -> Callable[[], T]:
    cycle = itertools.cycle(items)
    return lambda: next(cycle)


@click.command(name="cache")
@click.option(
    "--users",
    type=click.IntRange(min=2),
    default=100,
    show_default=True,
    help="Demo users to seed; one feed request each per variant.",
)
@click.option(
    "--concurrent",
    type=click.IntRange(min=1, max=1000),
    default=1000,
    show_default=True,
    help="Reads at once of one cold key.",
)
@click.option(
    "--invalidations",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Preference changes timed from commit to the delete.",
)
def command(users: int, concurrent: int, invalidations: int) -> None:
    """The preference and post caches: database loads for concurrent misses on one key,
    statements per feed request with and without them, commit-to-invalidation lag."""
    run(bench_cache(CacheBench(users=users, concurrent=concurrent, invalidations=invalidations)))
