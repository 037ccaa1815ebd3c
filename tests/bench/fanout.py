"""`./dev bench fanout`: what one post costs the feed's fan-out on write, and what a big
author (not fanned out) costs their followers' reads instead.

Everything runs on a database, a Redis and a data folder of the bench's own: `nova up` in
a subprocess on free ports (its relay and the feed's consumer group included), a fresh
database on NOVA_DATABASE_URL's server (or an embedded PostgreSQL in a temporary folder)
and a throwaway redis-server, whose INFO commandstats therefore count this bench's
writes only.

1. Fan-out: one author and `followers` users made by CreateUser, each following the
   author by Follow (the real path: the user service's outbox, the relay, the feed's
   consumer), each reading their feed once (so they are active and their timelines
   built). The author then posts `posts` times by CreatePost; for each post, the time
   from CreatePost's reply (the commit is just before it) until the post is in the last
   follower's timeline, found by polling every follower's timeline (ZSCORE, pipelined;
   the resolution is one poll of the followers still waiting, a few ms), and the Redis
   ZADDs the post caused. NOVA_FEED_BIG_AUTHOR_FOLLOWERS is set to `followers`: the
   author is as big as an author can be and still be fanned out.
2. A big author with `big_followers` followers: seeding that many through RPCs would take
   longer than everything else here, so the feed's projections (members, follows, posts)
   are written directly in SQL, for synthetic users, with the author (a real user, made
   by CreateUser) marked big. The author's post goes through CreatePost and the
   consumer: its ZADDs count the fan-out writes (0 expected; at most 1, for the author's
   own timeline). Then GetHomeFeed at a fixed rate for `readers` followers of the big
   author against `readers` users who follow the same normal authors but not the big
   one: the difference is the read-time merge (one more PostgreSQL query per read).

The load generator runs in this process, outside the measured services.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click
from grpc import aio
from hdrh.histogram import HdrHistogram
from redis.asyncio import Redis
from rich.table import Table

from nova.common.v1 import page_pb2
from nova.content.v1 import content_pb2, content_pb2_grpc
from nova.feed.v1 import feed_pb2, feed_pb2_grpc
from nova.user.v1 import user_pb2, user_pb2_grpc
from services.feed.timelines import Item, timeline_key
from services.runtime.auth import Caller, TokenCodec
from services.runtime.embedded_postgres import embedded_postgres
from services.runtime.ids import DEFAULT_TENANT_ID, new_id
from tests.bench.harness import (
    LOAD_COLUMNS,
    BenchError,
    console,
    error_counts,
    load_cells,
    nova_up,
    open_channels,
    run,
)
from tests.bench.loadgen import Load, LoadResult, generate
from tests.brokers import redis_server

T = TypeVar("T")

_SERVICES = ("user", "content", "feed")
_PASSWORD = "fanout-bench-password"
_CALL_TIMEOUT_SECONDS = 30.0
_POLL_SECONDS = 0.002
_PAGE_SIZE = 20
_POSTS_PER_SYNTHETIC_AUTHOR = 40
_HIGHEST_MICROSECONDS = 600_000_000


@dataclass(frozen=True)
class FanoutBench:
    followers: int = 10_000
    """Active followers of the fanned-out author (and the big-author threshold)."""
    posts: int = 10
    """Posts by that author, each measured."""
    big_followers: int = 100_000
    """Followers of the big author, seeded in SQL; more than `followers`."""
    readers: int = 200
    """Readers on each side of the read-cost comparison."""
    followed_authors: int = 20
    """Normal (fanned-out) authors every reader follows, each with 40 posts."""
    read_load: Load = field(
        default_factory=lambda: Load(rate=200, duration=10, warmup=2, max_outstanding=1000)
    )
    """GetHomeFeed for each side of the read-cost comparison."""
    concurrency: int = 32
    """RPCs in flight while seeding."""
    wait_seconds: float = 600.0
    """How long the bench waits, each time, for what it caused to reach the feed."""

    def __post_init__(self) -> None:
        if self.big_followers <= self.followers:
            raise ValueError(
                f"big_followers ({self.big_followers}) must exceed followers "
                f"({self.followers}), the big-author threshold"
            )
        if min(self.followers, self.posts, self.readers, self.followed_authors) < 1:
            raise ValueError(f"followers, posts, readers and followed_authors must be >= 1: {self}")
        if self.readers > self.big_followers:
            raise ValueError(f"readers ({self.readers}) cannot exceed big_followers")


@dataclass(frozen=True)
class Backing:
    """The bench's own database, Redis and data folder, as `nova up`'s environment."""

    database_url: str
    redis_url: str
    data_dir: Path
    secret: str

    def env(self, options: FanoutBench) -> dict[str, str]:
        return {
            "NOVA_DATABASE_URL": self.database_url,
            "NOVA_REDIS_URL": self.redis_url,
            "NOVA_DATA_DIR": str(self.data_dir),
            "NOVA_AUTH_SECRET": self.secret,
            "NOVA_PASSWORD_HASH_PROFILE": "insecure-fast",
            "NOVA_PASSWORD_HASH_QUEUE": "10000",
            "NOVA_FEED_BIG_AUTHOR_FOLLOWERS": str(options.followers),
        }


@dataclass(frozen=True)
class PostFanout:
    seconds_to_last: float
    """CreatePost's reply until the post was in the last follower's timeline."""
    seconds_to_first: float
    zadds: int
    """ZADD calls Redis counted while the post fanned out (commandstats)."""


@dataclass(frozen=True)
class BigAuthor:
    zadds: int
    """ZADD calls the big author's post caused: no follower's timeline is written."""
    scripts: int
    """EVALSHA calls it caused (a timeline write script each)."""
    merged_on_read: bool
    """A follower's next GetHomeFeed had the post at the top (merged at read time)."""
    without: LoadResult
    with_big: LoadResult


@dataclass(frozen=True)
class FanoutReport:
    posts: list[PostFanout]
    big: BigAuthor
    seed_seconds: float


@dataclass(frozen=True)
class _User:
    id: str
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


async def bench_fanout(options: FanoutBench) -> None:
    out = console()
    async with own_backing(os.environ.get("NOVA_DATABASE_URL")) as backing:
        out.print("bench: starting nova up on a database and Redis of its own")
        async with nova_up(_SERVICES, env=backing.env(options)) as server:
            try:
                report = await measure(server.addresses, backing, options, say=out.print)
            except aio.AioRpcError as error:
                raise BenchError(
                    f"a call failed: {error.code().name}: {error.details()}; {server.output()}"
                ) from None
    for rendered in tables(report, options):
        out.print(rendered)


@asynccontextmanager
async def own_backing(server_url: str | None) -> AsyncIterator[Backing]:
    """A fresh database on `server_url` (None: an embedded PostgreSQL in a temporary
    folder), a throwaway Redis and a temporary data folder; all gone afterwards."""
    async with AsyncExitStack() as stack:
        if server_url is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="nova-bench-pg-"))
            server_url = await stack.enter_async_context(embedded_postgres(Path(folder)))
        database_url = await stack.enter_async_context(_fresh_database(server_url))
        redis_url = await stack.enter_async_context(redis_server())
        data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="nova-bench-fanout-"))
        yield Backing(
            database_url=database_url,
            redis_url=redis_url,
            data_dir=Path(data_dir),
            secret="fanout-bench-" + secrets.token_hex(24),
        )


@asynccontextmanager
async def _fresh_database(server_url: str) -> AsyncIterator[str]:
    name = f"nova_bench_fanout_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            yield _with_database(server_url, name)
        finally:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


def _with_database(url: str, name: str) -> str:
    """Points a postgresql:// URL (host or socket form) at another database."""
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    authority, _, _ = rest.partition("/")
    return f"{scheme}://{authority}/{name}" + (f"?{query}" if query else "")


async def measure(
    addresses: Mapping[str, str],
    backing: Backing,
    options: FanoutBench,
    *,
    say: Callable[[str], None] = lambda _: None,
) -> FanoutReport:
    """Both parts against the services at `addresses`, which use `backing`."""
    redis = Redis.from_url(backing.redis_url)
    db = await asyncpg.connect(backing.database_url)
    try:
        async with AsyncExitStack() as stack:
            channels = {
                name: await stack.enter_async_context(open_channels(addresses[name]))
                for name in _SERVICES
            }
            bench = _Bench(channels, redis, db, backing, options, say)
            started = time.perf_counter()
            author, followers = await bench.seed_followed_author()
            seed_seconds = time.perf_counter() - started
            posts = [await bench.fan_out_one(author, followers, i) for i in range(options.posts)]
            big = await bench.big_author()
    finally:
        await db.close()
        await redis.aclose()
    return FanoutReport(posts=posts, big=big, seed_seconds=seed_seconds)


class _Bench:
    def __init__(
        self,
        channels: Mapping[str, Sequence[aio.Channel]],
        redis: Redis,
        db: asyncpg.Connection,
        backing: Backing,
        options: FanoutBench,
        say: Callable[[str], None],
    ) -> None:
        self.users = _rotate([user_pb2_grpc.UserServiceStub(c) for c in channels["user"]])
        self.content = _rotate(
            [content_pb2_grpc.ContentServiceStub(c) for c in channels["content"]]
        )
        self.feed = _rotate([feed_pb2_grpc.FeedServiceStub(c) for c in channels["feed"]])
        self.redis = redis
        self.db = db
        self.options = options
        self.say = say
        self.codec = TokenCodec(secret=backing.secret, ttl=timedelta(hours=2))
        self.run = f"f{secrets.token_hex(3)}"
        self.tenant = DEFAULT_TENANT_ID

    # -- Part 1: fan-out on write ------------------------------------------------------

    async def seed_followed_author(self) -> tuple[_User, list[_User]]:
        count = self.options.followers
        self.say(f"bench: {count} followers by CreateUser, Follow and GetHomeFeed")
        author = await self._create_user(f"{self.run}_author")
        followers = await self._each(
            [f"{self.run}_{i:06d}" for i in range(count)], self._create_user
        )
        await self._each(followers, lambda follower: self._follow(follower, author))
        await self._until(
            "the feed counted every follow",
            lambda: self._followers_counted(author.id, count),
        )
        await self._each(followers, self._read_feed)
        await self._until_built([uuid.UUID(f.id) for f in followers])
        return author, followers

    async def fan_out_one(
        self, author: _User, followers: Sequence[_User], index: int
    ) -> PostFanout:
        keys = [timeline_key(self.tenant, uuid.UUID(f.id)) for f in followers]
        before = await self._commandstats()
        created = await self.content().CreatePost(
            content_pb2.CreatePostRequest(text=f"fan-out {index}"),
            metadata=author.metadata,
            timeout=_CALL_TIMEOUT_SECONDS,
        )
        committed = time.perf_counter()
        member = Item(uuid.UUID(created.post.id), uuid.UUID(author.id)).member
        seen = await self._until_in_timelines(keys, member)
        after = await self._commandstats()
        fanout = PostFanout(
            seconds_to_last=max(seen) - committed,
            seconds_to_first=min(seen) - committed,
            zadds=_calls(after, before, "zadd"),
        )
        self.say(
            f"bench: post {index + 1}: last of {len(keys)} timelines after "
            f"{fanout.seconds_to_last * 1000:.0f} ms, {fanout.zadds} ZADDs"
        )
        return fanout

    # -- Part 2: a big author ---------------------------------------------------------

    async def big_author(self) -> BigAuthor:
        options = self.options
        self.say(f"bench: a big author with {options.big_followers} followers, seeded in SQL")
        big = await self._create_user(f"{self.run}_big")
        big_id = uuid.UUID(big.id)
        authors = [new_id() for _ in range(options.followed_authors)]
        with_big = [new_id() for _ in range(options.readers)]
        without = [new_id() for _ in range(options.readers)]
        others = [new_id() for _ in range(options.big_followers - options.readers)]
        await self._seed_projections(big_id, authors, with_big, without, others)
        readers = {reader: self._token_for(reader) for reader in (*with_big, *without)}
        await self._each(list(readers.values()), self._read_feed)
        await self._until_built(list(readers))

        before = await self._commandstats()
        created = await self.content().CreatePost(
            content_pb2.CreatePostRequest(text="a big author's post"),
            metadata=big.metadata,
            timeout=_CALL_TIMEOUT_SECONDS,
        )
        post_id = uuid.UUID(created.post.id)
        await self._until(
            "the feed's consumer took the big author's post", lambda: self._known(post_id)
        )
        after = await self._commandstats()
        top = await self._first_item(readers[with_big[0]])

        self.say(f"bench: GetHomeFeed at {options.read_load.rate:g}/s, big author not followed")
        without_result = await self._read_at_rate([readers[r] for r in without])
        self.say(f"bench: GetHomeFeed at {options.read_load.rate:g}/s, big author followed")
        with_result = await self._read_at_rate([readers[r] for r in with_big])
        return BigAuthor(
            zadds=_calls(after, before, "zadd"),
            scripts=_calls(after, before, "evalsha") + _calls(after, before, "eval"),
            merged_on_read=top == post_id,
            without=without_result,
            with_big=with_result,
        )

    async def _seed_projections(
        self,
        big: uuid.UUID,
        authors: Sequence[uuid.UUID],
        with_big: Sequence[uuid.UUID],
        without: Sequence[uuid.UUID],
        others: Sequence[uuid.UUID],
    ) -> None:
        """The feed's own tables, as its consumer would have left them: every synthetic
        user a member, the big author marked big with its follower count, 40 posts per
        normal author and the big author, and the follows."""
        await self._until("the feed knew the big author", lambda: self._member(big))
        tenant = self.tenant
        members = [*authors, *with_big, *without, *others]
        followers_of_big = [*with_big, *others]
        readers = [*with_big, *without]
        posts = [
            (new_id(), author)
            for _ in range(_POSTS_PER_SYNTHETIC_AUTHOR)
            for author in (*authors, big)
        ]
        async with self.db.transaction():
            await self.db.execute(
                """INSERT INTO feed_service.members (tenant_id, user_id)
                   SELECT $1, id FROM unnest($2::uuid[]) AS m(id)""",
                tenant,
                members,
            )
            await self.db.execute(
                """UPDATE feed_service.members SET followers = followers + $3
                    WHERE tenant_id = $1 AND user_id = ANY($2::uuid[])""",
                tenant,
                authors,
                len(readers),
            )
            await self.db.execute(
                """UPDATE feed_service.members SET followers = $3, big = true
                    WHERE tenant_id = $1 AND user_id = $2""",
                tenant,
                big,
                len(followers_of_big),
            )
            await self.db.execute(
                """INSERT INTO feed_service.follows (tenant_id, follower_id, followee_id)
                   SELECT $1, follower, $3 FROM unnest($2::uuid[]) AS f(follower)""",
                tenant,
                followers_of_big,
                big,
            )
            await self.db.execute(
                """INSERT INTO feed_service.follows (tenant_id, follower_id, followee_id)
                   SELECT $1, r.id, a.id FROM unnest($2::uuid[]) AS r(id)
                    CROSS JOIN unnest($3::uuid[]) AS a(id)""",
                tenant,
                readers,
                authors,
            )
            await self.db.execute(
                """INSERT INTO feed_service.posts (tenant_id, post_id, author_id)
                   SELECT $1, p.post_id, p.author_id
                     FROM unnest($2::uuid[], $3::uuid[]) AS p(post_id, author_id)""",
                tenant,
                [post for post, _ in posts],
                [author for _, author in posts],
            )
        await self.db.execute(
            "ANALYZE feed_service.members, feed_service.follows, feed_service.posts"
        )

    async def _read_at_rate(self, readers: Sequence[_User]) -> LoadResult:
        viewers = itertools.cycle(readers)
        request = feed_pb2.GetHomeFeedRequest(page=page_pb2.PageRequest(page_size=_PAGE_SIZE))

        async def call() -> None:
            await self.feed().GetHomeFeed(request, metadata=next(viewers).metadata)

        return await generate(call, self.options.read_load)

    # -- Calls and waits --------------------------------------------------------------

    async def _create_user(self, handle: str) -> _User:
        created = await self.users().CreateUser(
            user_pb2.CreateUserRequest(
                handle=handle, email=f"{handle}@example.com", password=_PASSWORD
            ),
            timeout=_CALL_TIMEOUT_SECONDS,
        )
        user_id = uuid.UUID(created.user.id)
        token, _ = self.codec.issue(Caller(user_id, self.tenant, handle))
        return _User(str(user_id), token)

    def _token_for(self, user_id: uuid.UUID) -> _User:
        """A token for a user only the feed's projections know (part 2's synthetic ones)."""
        token, _ = self.codec.issue(Caller(user_id, self.tenant, f"{self.run}_synthetic"))
        return _User(str(user_id), token)

    async def _follow(self, follower: _User, followee: _User) -> None:
        await self.users().Follow(
            user_pb2.FollowRequest(user_id=followee.id),
            metadata=follower.metadata,
            timeout=_CALL_TIMEOUT_SECONDS,
        )

    async def _read_feed(self, reader: _User) -> None:
        await self.feed().GetHomeFeed(
            feed_pb2.GetHomeFeedRequest(), metadata=reader.metadata, timeout=_CALL_TIMEOUT_SECONDS
        )

    async def _first_item(self, reader: _User) -> uuid.UUID | None:
        response = await self.feed().GetHomeFeed(
            feed_pb2.GetHomeFeedRequest(), metadata=reader.metadata, timeout=_CALL_TIMEOUT_SECONDS
        )
        return uuid.UUID(response.items[0].post_id) if response.items else None

    async def _each(self, items: Sequence[T], action: Callable[[T], Awaitable[Any]]) -> list[Any]:
        """action over items with `concurrency` calls in flight; results in item order."""
        results: dict[int, Any] = {}
        pending = iter(enumerate(items))

        async def worker() -> None:
            for index, item in pending:
                results[index] = await action(item)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.options.concurrency, len(items))):
                    group.create_task(worker())
        except ExceptionGroup as failed:
            # Several workers fail together against a dead server: the first one says why.
            first: BaseException = failed
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            if isinstance(first, aio.AioRpcError):
                raise first from None
            raise
        return [results[index] for index in range(len(items))]

    async def _until(self, what: str, done: Callable[[], Awaitable[bool]]) -> None:
        deadline = time.monotonic() + self.options.wait_seconds
        while not await done():
            if time.monotonic() > deadline:
                raise BenchError(f"gave up waiting: {what} (--wait-seconds)")
            await asyncio.sleep(0.05)

    async def _followers_counted(self, author: str, count: int) -> bool:
        counted = await self.db.fetchval(
            """SELECT followers FROM feed_service.members
                WHERE tenant_id = $1 AND user_id = $2""",
            self.tenant,
            uuid.UUID(author),
        )
        return bool(counted == count)

    async def _member(self, user: uuid.UUID) -> bool:
        found = await self.db.fetchval(
            "SELECT true FROM feed_service.members WHERE tenant_id = $1 AND user_id = $2",
            self.tenant,
            user,
        )
        return bool(found)

    async def _known(self, post: uuid.UUID) -> bool:
        found = await self.db.fetchval(
            "SELECT true FROM feed_service.posts WHERE tenant_id = $1 AND post_id = $2",
            self.tenant,
            post,
        )
        return bool(found)

    async def _until_built(self, users: Sequence[uuid.UUID]) -> None:
        """Until every user's timeline is built and no rebuild still holds its lock (its
        catch-up write would count as one of the next post's writes)."""
        tags = [f"nova:feed:{{{self.tenant}:{user}}}" for user in users]

        async def built() -> bool:
            async with self.redis.pipeline(transaction=False) as pipe:
                for tag in tags:
                    pipe.exists(f"{tag}:tl")
                    pipe.exists(f"{tag}:rebuilding")
                replies = await pipe.execute()
            return all(replies[0::2]) and not any(replies[1::2])

        await self._until("every reader's timeline was rebuilt", built)

    async def _until_in_timelines(self, keys: Sequence[str], member: str) -> list[float]:
        """When each timeline was first seen holding `member`."""
        pending = list(keys)
        seen: list[float] = []
        deadline = time.monotonic() + self.options.wait_seconds
        while pending:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in pending:
                    pipe.zscore(key, member)
                scores = await pipe.execute()
            now = time.perf_counter()
            waiting = [key for key, score in zip(pending, scores, strict=True) if score is None]
            seen += [now] * (len(pending) - len(waiting))
            pending = waiting
            if pending:
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{len(pending)} of {len(keys)} timelines never got the post "
                        "(--wait-seconds)"
                    )
                await asyncio.sleep(_POLL_SECONDS)
        return seen

    async def _commandstats(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self.redis.info("commandstats")
        return stats


def _calls(after: Mapping[str, Any], before: Mapping[str, Any], command: str) -> int:
    key = f"cmdstat_{command}"
    return int(after.get(key, {}).get("calls", 0)) - int(before.get(key, {}).get("calls", 0))


def _rotate(items: Sequence[T]) -> Callable[[], T]:
    """A picker of the next item, round robin (self.users() is the next stub)."""
    cycle = itertools.cycle(items)
    return lambda: next(cycle)


def tables(report: FanoutReport, options: FanoutBench) -> list[Table]:
    seconds = HdrHistogram(1, _HIGHEST_MICROSECONDS, 3)
    for post in report.posts:
        seconds.record_value(max(1, round(post.seconds_to_last * 1e6)))
    fanout = Table(
        title=(
            f"bench fanout: one author, {options.followers} active followers (by CreateUser, "
            f"Follow, GetHomeFeed: {report.seed_seconds:.0f} s), {options.posts} posts; "
            "CreatePost's reply -> the post in the last follower's timeline"
        ),
        title_justify="left",
    )
    for heading in (
        "posts", "p50 ms", "p99 ms", "max ms", "first timeline p50 ms", "ZADDs per post",
    ):  # fmt: skip
        fanout.add_column(heading, justify="right")
    firsts = sorted(post.seconds_to_first for post in report.posts)
    zadds = sorted(post.zadds for post in report.posts)
    fanout.add_row(
        str(len(report.posts)),
        f"{seconds.get_value_at_percentile(50) / 1000:.0f}",
        f"{seconds.get_value_at_percentile(99) / 1000:.0f}",
        f"{seconds.get_max_value() / 1000:.0f}",
        f"{firsts[len(firsts) // 2] * 1000:.0f}",
        f"{zadds[0]}" if zadds[0] == zadds[-1] else f"{zadds[0]}-{zadds[-1]}",
    )
    big = report.big
    writes = Table(
        title=(
            f"a big author with {options.big_followers} followers (projections seeded in SQL; "
            "the post by CreatePost): Redis writes its post caused"
        ),
        title_justify="left",
    )
    for heading in ("ZADDs", "write scripts (EVALSHA)", "fanned-out author's ZADDs per post"):
        writes.add_column(heading, justify="right")
    writes.add_column("merged into a follower's next read")
    writes.add_row(
        str(big.zadds), str(big.scripts), str(zadds[-1]), "yes" if big.merged_on_read else "NO"
    )
    reads = Table(
        title=(
            f"GetHomeFeed (page of {_PAGE_SIZE}) for {options.readers} readers each following "
            f"{options.followed_authors} fanned-out authors, with and without the big author: "
            f"{options.read_load.duration:g} s after {options.read_load.warmup:g} s warm-up"
        ),
        title_justify="left",
    )
    reads.add_column("readers", no_wrap=True)
    for heading in (*LOAD_COLUMNS, "p50 / without", "p99 / without"):
        reads.add_column(heading, justify="right")
    reads.add_column("errors")
    for name, result in (
        ("big author not followed", big.without),
        ("big author followed", big.with_big),
    ):
        reads.add_row(
            name,
            *load_cells(result),
            _ratio(result.p50_ms, big.without.p50_ms),
            _ratio(result.p99_ms, big.without.p99_ms),
            error_counts(result.errors),
        )
    return [fanout, writes, reads]


def _ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x" if baseline else "-"


@click.command(name="fanout")
@click.option(
    "--followers",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Active followers of the fanned-out author (made by RPCs; also the big-author threshold).",
)
@click.option(
    "--posts",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Posts by that author, each measured.",
)
@click.option(
    "--big-followers",
    type=click.IntRange(min=2),
    default=100_000,
    show_default=True,
    help="Followers of the big author (seeded in SQL); more than --followers.",
)
@click.option(
    "--readers",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Readers on each side of the read-cost comparison.",
)
@click.option(
    "--read-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=200,
    show_default=True,
    help="GetHomeFeed calls per second in the read-cost runs.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=10,
    show_default=True,
    help="Seconds measured per read-cost run.",
)
@click.option(
    "--warmup",
    type=click.FloatRange(min=0),
    default=2,
    show_default=True,
    help="Seconds of unmeasured calls before each read-cost run.",
)
@click.option(
    "--wait-seconds",
    type=click.FloatRange(min=1),
    default=600,
    show_default=True,
    help="How long to wait for the feed to take in what the bench caused.",
)
def command(
    followers: int,
    posts: int,
    big_followers: int,
    readers: int,
    read_rate: float,
    duration: float,
    warmup: float,
    wait_seconds: float,
) -> None:
    """Fan-out on write: one author's post reaching 10,000 active followers' timelines;
    a big author with 100,000 followers: no fan-out writes, and the read-time merge's
    cost on a follower's GetHomeFeed. On a database and Redis of the bench's own."""
    try:
        options = FanoutBench(
            followers=followers,
            posts=posts,
            big_followers=big_followers,
            readers=readers,
            read_load=Load(rate=read_rate, duration=duration, warmup=warmup, max_outstanding=1000),
            wait_seconds=wait_seconds,
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    run(bench_fanout(options))
