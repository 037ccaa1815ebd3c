"""Demo data made through the public gRPC APIs, so it exercises what a real client would.

Going through the APIs rather than SQL keeps the seed honest: counters, validation and
auth all run, and the data can never take a shape the services would not produce. All
randomness (who follows whom, who likes what, the texts) comes from one RNG and is drawn
before each phase's calls start, so a given --seed yields the same graph whatever order
the concurrent calls finish in; handles carry a random run prefix, so seeding twice adds
a second community instead of colliding with the first.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import click
import grpc
from grpc import aio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from interceptors.client.refusal import refusal_of
from interceptors.client.stack import ClientSettings, balanced
from interceptors.client.tls import ChannelTls
from nova.common.v1 import page_pb2
from nova.content.v1 import content_pb2, content_pb2_grpc
from nova.feed.v1 import feed_pb2, feed_pb2_grpc
from nova.user.v1 import user_pb2, user_pb2_grpc
from services.cli.common import load_config, run

DEMO_PASSWORD = "nova-demo-password"
"""Every demo user's password, so a person can sign in as any of them."""

_CALL_TIMEOUT_SECONDS = 30.0
_FEED_WAIT_SECONDS = 60.0
"""How long the seed waits for the events it caused to reach the home feeds."""
_FEED_PAGES = 10

_FIRST_NAMES = ("Ada", "Alan", "Grace", "Linus", "Barbara", "Ken", "Radia", "Edsger", "Frances")
_LAST_NAMES = ("Lovelace", "Turing", "Hopper", "Torvalds", "Liskov", "Thompson", "Perlman")
_WORDS = (
    "coffee", "morning", "garden", "river", "build", "ship", "test", "deploy", "music",
    "sunset", "mountain", "city", "friends", "weekend", "library", "python", "postgres",
)  # fmt: skip
_REPLIES = ("Love this!", "So true.", "Congrats!", "Where was this?", "Same here.", "Nice one.")

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class SeedPlan:
    """How much to make; follows and likes are capped by the number of other users."""

    users: int = 200
    posts_per_user: int = 5
    follows_per_user: int = 20
    comments_per_post: int = 2
    likes_per_post: int = 5


@dataclass(frozen=True)
class DemoUser:
    id: str
    handle: str
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


@dataclass(frozen=True)
class Seeded:
    """What a seed made, for people (the summary) and for benchmarks (ids and tokens)."""

    run: str
    """The prefix of this run's handles."""
    users: list[DemoUser]
    post_ids: list[str]
    """Grouped by author, in user order: users[0]'s posts first."""
    follows: int
    comments: int
    likes: int
    calls: int
    seconds: float


_FIRST_BACKOFF_SECONDS = 0.1
_SEND_AGAIN = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED)
"""What a service answers when it did nothing and the call may be sent again."""
_MAX_BACKOFF_SECONDS = 2.0


class SeedError(Exception):
    """An RPC of the seed failed; the message names the call, status code and details."""


async def _when_admitted(send: Callable[[], Awaitable[R]]) -> R:
    """`send()`, sent again after the wait the service names while it refuses it
    (RESOURCE_EXHAUSTED with a retry hint, before doing anything): a seed signs up more
    users at once than the password-hashing pool takes, and its writes can find every
    database connection of a service busy (a refusal without a hint: then after a
    doubling backoff), or conflict with each other (ABORTED: "send it again"). Within
    _CALL_TIMEOUT_SECONDS."""
    give_up = time.monotonic() + _CALL_TIMEOUT_SECONDS
    backoff = _FIRST_BACKOFF_SECONDS
    while True:
        try:
            return await send()
        except aio.AioRpcError as error:
            if error.code() not in _SEND_AGAIN:
                raise
            # No hint (every database connection busy, or a conflict with a concurrent
            # change): "retry with backoff", doubling.
            wait = refusal_of(error).retry_after_seconds or backoff
            backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
            if time.monotonic() + wait > give_up:
                raise
        await asyncio.sleep(wait)


async def seed(
    addresses: Mapping[str, str],
    plan: SeedPlan,
    *,
    concurrency: int = 16,
    rng_seed: int | None = None,
    progress: Progress | None = None,
    tls: ChannelTls | None = None,
) -> Seeded:
    """Creates users, follows, posts, comments and likes against addresses["user"] and
    addresses["content"] (over `tls` when given; each may name several replicas), at most
    `concurrency` calls at a time, then waits until each user's home feed (addresses["feed"],
    if given) shows their newest post: the events reached the feed, so what the seed made
    can be read at once. The first failed call stops it with a SeedError."""
    settings = ClientSettings(tls=tls)
    async with (
        balanced("user", [addresses["user"]], settings) as users,
        balanced("content", [addresses["content"]], settings) as content,
        balanced("feed", [addresses.get("feed", addresses["user"])], settings) as feed,
    ):
        seeder = _Seeder(
            users=users.stub(user_pb2_grpc.UserServiceStub),
            content=content.stub(content_pb2_grpc.ContentServiceStub),
            feed=feed.stub(feed_pb2_grpc.FeedServiceStub) if "feed" in addresses else None,
            rng=random.Random(rng_seed),
            concurrency=concurrency,
            progress=progress,
        )
        return await seeder.run(plan)


async def seed_and_report(
    addresses: Mapping[str, str],
    plan: SeedPlan,
    *,
    concurrency: int,
    rng_seed: int | None,
    tls: ChannelTls | None = None,
) -> None:
    """seed() with a progress bar per phase, then a summary a person can sign in from."""
    console = Console()
    with Progress(
        "[progress.description]{task.description:<9}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        seeded = await seed(
            addresses, plan, concurrency=concurrency, rng_seed=rng_seed, progress=progress, tls=tls
        )
    rate = seeded.calls / seeded.seconds
    console.print(
        f"seeded run [bold]{seeded.run}[/]: {len(seeded.users)} users, {seeded.follows} follows, "
        f"{len(seeded.post_ids)} posts, {seeded.comments} comments, {seeded.likes} likes "
        f"in {seeded.seconds:.1f} s ({seeded.calls} calls, {rate:.0f} calls/s)"
    )
    console.print(
        f"sign in as any of them, e.g. handle [bold]{seeded.users[0].handle}[/], "
        f"password [bold]{DEMO_PASSWORD}[/] (every demo user has it)"
    )


class _Seeder:
    def __init__(
        self,
        *,
        users: user_pb2_grpc.UserServiceAsyncStub,
        content: content_pb2_grpc.ContentServiceAsyncStub,
        feed: feed_pb2_grpc.FeedServiceAsyncStub | None,
        rng: random.Random,
        concurrency: int,
        progress: Progress | None,
    ) -> None:
        self._users = users
        self._content = content
        self._feed = feed
        self._rng = rng
        self._concurrency = concurrency
        self._progress = progress
        self._calls = 0

    async def run(self, plan: SeedPlan) -> Seeded:
        started = time.perf_counter()
        run = f"d{secrets.token_hex(3)}"
        rng = self._rng
        count = plan.users

        handles = [
            (f"{run}_{i:05d}", f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}")
            for i in range(count)
        ]
        users = await self._phase("users", handles, lambda user: self._user(*user))

        follows = [
            (users[follower], users[followee])
            for follower in range(count)
            for followee in _others(rng, count, follower, plan.follows_per_user)
        ]
        await self._phase("follows", follows, lambda pair: self._follow(*pair))

        posts = [(user, _sentence(rng)) for user in users for _ in range(plan.posts_per_user)]
        post_ids = await self._phase("posts", posts, lambda post: self._post(*post))

        comments = [
            (rng.choice(users), post_id, rng.choice(_REPLIES))
            for post_id in post_ids
            for _ in range(plan.comments_per_post)
        ]
        await self._phase("comments", comments, lambda comment: self._comment(*comment))

        likes = [
            (liker, post_id)
            for post_id in post_ids
            for liker in rng.sample(users, min(plan.likes_per_post, count))
        ]
        await self._phase("likes", likes, lambda like: self._like(*like))

        per_user = plan.posts_per_user
        newest = [
            (user, max(post_ids[i * per_user : (i + 1) * per_user]))
            for i, user in enumerate(users)
            if per_user and self._feed is not None
        ]
        give_up = time.monotonic() + _FEED_WAIT_SECONDS
        await self._phase("feeds", newest, lambda mine: self._in_feed(*mine, give_up))

        return Seeded(
            run=run,
            users=users,
            post_ids=post_ids,
            follows=len(follows),
            comments=len(comments),
            likes=len(likes),
            calls=self._calls,
            seconds=time.perf_counter() - started,
        )

    async def _phase(
        self, name: str, items: Sequence[T], action: Callable[[T], Awaitable[R]]
    ) -> list[R]:
        """Runs action over items with `concurrency` workers; results in item order."""
        progress = self._progress
        task = progress.add_task(name, total=len(items)) if progress is not None else None
        results: dict[int, R] = {}
        pending = iter(enumerate(items))

        async def worker() -> None:
            for index, item in pending:
                results[index] = await action(item)
                if progress is not None and task is not None:
                    progress.advance(task)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self._concurrency, len(items))):
                    group.create_task(worker())
        except ExceptionGroup as failed:
            # Not `except* SeedError`: an exception raised in an except* block leaves as an
            # ExceptionGroup again, and several workers fail together against a dead server.
            seed_errors = failed.subgroup(SeedError)
            if seed_errors is None:
                raise
            raise _first_leaf(seed_errors) from None
        return [results[index] for index in range(len(items))]

    async def _rpc(self, what: str, call: Awaitable[R], *, counted: bool = True) -> R:
        """`counted`: one of the writes the seed reports (not a wait for the feed)."""
        self._calls += counted
        try:
            return await call
        except aio.AioRpcError as error:
            raise SeedError(f"{what} failed: {error.code().name}: {error.details()}") from None

    async def _user(self, handle: str, display_name: str) -> DemoUser:
        created = await self._rpc(
            f"UserService.CreateUser of {handle}",
            _when_admitted(
                lambda: self._users.CreateUser(
                    user_pb2.CreateUserRequest(
                        handle=handle,
                        email=f"{handle}@example.com",
                        password=DEMO_PASSWORD,
                        display_name=display_name,
                    ),
                    timeout=_CALL_TIMEOUT_SECONDS,
                )
            ),
        )
        signed_in = await self._rpc(
            f"UserService.Authenticate of {handle}",
            _when_admitted(
                lambda: self._users.Authenticate(
                    user_pb2.AuthenticateRequest(login=handle, password=DEMO_PASSWORD),
                    timeout=_CALL_TIMEOUT_SECONDS,
                )
            ),
        )
        return DemoUser(id=created.user.id, handle=handle, token=signed_in.access_token)

    async def _follow(self, follower: DemoUser, followee: DemoUser) -> None:
        await self._rpc(
            f"UserService.Follow of {followee.handle} by {follower.handle}",
            _when_admitted(
                lambda: self._users.Follow(
                    user_pb2.FollowRequest(user_id=followee.id),
                    metadata=follower.metadata,
                    timeout=_CALL_TIMEOUT_SECONDS,
                )
            ),
        )

    async def _post(self, author: DemoUser, text: str) -> str:
        created = await self._rpc(
            f"ContentService.CreatePost by {author.handle}",
            _when_admitted(
                lambda: self._content.CreatePost(
                    content_pb2.CreatePostRequest(text=text),
                    metadata=author.metadata,
                    timeout=_CALL_TIMEOUT_SECONDS,
                )
            ),
        )
        return created.post.id

    async def _comment(self, author: DemoUser, post_id: str, text: str) -> None:
        await self._rpc(
            f"ContentService.CreateComment on post {post_id} by {author.handle}",
            _when_admitted(
                lambda: self._content.CreateComment(
                    content_pb2.CreateCommentRequest(post_id=post_id, text=text),
                    metadata=author.metadata,
                    timeout=_CALL_TIMEOUT_SECONDS,
                )
            ),
        )

    async def _in_feed(self, user: DemoUser, post_id: str, give_up: float) -> None:
        """Waits until `post_id` (the user's own newest) is in the user's home feed."""
        assert self._feed is not None
        while True:
            token = ""
            for _ in range(_FEED_PAGES):
                page = await self._rpc(
                    f"FeedService.GetHomeFeed of {user.handle}",
                    self._feed.GetHomeFeed(
                        feed_pb2.GetHomeFeedRequest(
                            page=page_pb2.PageRequest(page_size=100, page_token=token)
                        ),
                        metadata=user.metadata,
                        timeout=_CALL_TIMEOUT_SECONDS,
                    ),
                    counted=False,
                )
                if any(item.post_id == post_id for item in page.items):
                    return
                token = page.page.next_page_token
                if not token:
                    break
            if time.monotonic() > give_up:
                raise SeedError(
                    f"{user.handle}'s home feed did not show their post {post_id} within "
                    f"{_FEED_WAIT_SECONDS:.0f} s: is the feed's consumer group running "
                    "(`nova up` runs it; else `nova relay` and `nova events consume --group "
                    "feed`)?"
                )
            await asyncio.sleep(0.1)

    async def _like(self, liker: DemoUser, post_id: str) -> None:
        await self._rpc(
            f"ContentService.LikePost of post {post_id} by {liker.handle}",
            _when_admitted(
                lambda: self._content.LikePost(
                    content_pb2.LikePostRequest(post_id=post_id),
                    metadata=liker.metadata,
                    timeout=_CALL_TIMEOUT_SECONDS,
                )
            ),
        )


def _others(rng: random.Random, count: int, me: int, wanted: int) -> list[int]:
    """Up to `wanted` distinct indexes in range(count), never `me`."""
    picked = rng.sample(range(count - 1), min(wanted, count - 1))
    return [index + 1 if index >= me else index for index in picked]


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choices(_WORDS, k=rng.randint(5, 15))).capitalize() + "."


@click.command(name="seed")
@click.option("--users", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--posts-per-user", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--follows-per-user", type=click.IntRange(min=0), default=20, show_default=True)
@click.option("--comments-per-post", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--likes-per-post", type=click.IntRange(min=0), default=5, show_default=True)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Calls in flight at most.",
)
@click.option("--seed", "rng_seed", type=int, help="Seed of the RNG, for the same data shape.")
def seed_command(
    users: int,
    posts_per_user: int,
    follows_per_user: int,
    comments_per_post: int,
    likes_per_post: int,
    concurrency: int,
    rng_seed: int | None,
) -> None:
    """Create demo users, follows, posts, comments and likes through the gRPC APIs
    (of the services at NOVA_USER_ADDRESS and NOVA_CONTENT_ADDRESS)."""
    plan = SeedPlan(
        users=users,
        posts_per_user=posts_per_user,
        follows_per_user=follows_per_user,
        comments_per_post=comments_per_post,
        likes_per_post=likes_per_post,
    )
    config = load_config()
    try:
        run(
            seed_and_report(
                config.addresses,
                plan,
                concurrency=concurrency,
                rng_seed=rng_seed,
                tls=config.clients.tls,
            )
        )
    except SeedError as error:
        raise click.ClickException(str(error)) from None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception of a (possibly nested) group."""
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
