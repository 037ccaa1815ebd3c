"""Per-request DataLoaders: every batchable edge of the schema as one batch RPC per tick.

Loads issued while one level of the query resolves are queued, then go out together as
one batch RPC (split at the RPC's 100-id maximum). Each key is kept for the rest of the
request, so a user who is a post author and a commenter, or a post reached through two
aliases, is fetched once. A key the service lists as missing fails only its own field;
a failed RPC fails the keys of that batch and is not kept, so a later load retries (but
for the view counts a feed page fetches ahead: `Loaders.page`).

The loaders are built by `_loader`; `./dev bench feed` builds the gateway with a subclass
that makes every load its own RPC (tests/bench/per_field.py), the per-field resolvers the
DataLoaders replace.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from functools import cached_property
from typing import Any, TypeVar, cast

from aiodataloader import DataLoader

from gateway.clients import Backend
from gateway.errors import BackendError, BadUserInput, NotFound
from nova.analytics.v1 import analytics_pb2
from nova.content.v1 import content_pb2
from nova.user.v1 import user_pb2

MAX_BATCH = 100
"""BatchGetUsers, BatchGetPosts, BatchGetPostStats, BatchListComments and
BatchGetPostMetrics take at most 100 ids per call (their protos say so)."""
MAX_COMMENTS_PER_POST = 20
"""BatchListComments returns at most 20 comments per post."""

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")
CommentsKey = tuple[str, int]
"""A post id and how many of its latest comments."""


def settled(load: Awaitable[V], pick: Callable[[V], R]) -> R | Awaitable[R]:
    """pick(value) at once when the load has already finished (its error raised, a field
    error like any other), else an awaitable of it. graphql-core completes a plain value
    where it stands, but each awaitable costs it a coroutine and, inside a list, a task:
    the home feed's `page` has every load of a page done before the page's fields
    resolve, so its few hundred fields complete without one."""
    if isinstance(load, asyncio.Future) and load.done() and not load.cancelled():
        return pick(load.result())

    async def later() -> R:
        return pick(await load)

    return later()


def itself(value: V) -> V:
    return value


def canonical_id(value: str, argument: str) -> str:
    """The id as the services write it. Checked here because one malformed id in a batch
    would fail the whole batch RPC, and with it every other field of the batch."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise BadUserInput(f"{argument} must be an id, got {value[:40]!r}") from None


class Loaders:
    """The DataLoaders of one request, each created on first use."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    @cached_property
    def users(self) -> DataLoader[str, user_pb2.User]:
        return self._loader(self._load_users)

    @cached_property
    def users_by_handle(self) -> DataLoader[str, user_pb2.User]:
        return self._loader(self._load_users_by_handle)

    @cached_property
    def posts(self) -> DataLoader[str, content_pb2.Post]:
        return self._loader(self._load_posts)

    @cached_property
    def stats(self) -> DataLoader[str, content_pb2.PostStats]:
        return self._loader(self._load_stats)

    @cached_property
    def comments(self) -> DataLoader[CommentsKey, list[content_pb2.Comment]]:
        return self._loader(self._load_comments)

    @cached_property
    def metrics(self) -> DataLoader[str, analytics_pb2.PostMetrics]:
        return self._loader(self._load_metrics)

    def prime_users(self, users: Iterable[user_pb2.User]) -> None:
        """Keeps users another RPC already returned (ListFollowing, GetUser by handle)."""
        for user in users:
            self.users.prime(user.id, user)

    async def page(
        self,
        post_ids: Sequence[str],
        *,
        stats: bool,
        comments: Sequence[int],
        authors: bool,
        commenters: bool,
        views: bool,
    ) -> list[content_pb2.Post | Exception]:
        """The posts of a page in order (NotFound for one deleted since it was listed),
        with what its fields will ask for already in the loaders: one BatchGetPosts
        answers the posts, their stats if `stats` and their latest comments for every
        page size in `comments` (newest first, so the shorter pages are the longest one
        cut), then one BatchGetUsers answers the authors if `authors` and the commenters
        if `commenters`. Two RPCs after the page's ids, where a loader per edge would
        make three waves of four; the fields then complete as plain values
        (`settled`).

        `views` adds one BatchGetPostMetrics, sent beside BatchGetPosts (it needs only
        the ids) and awaited last, so a slow analytics service holds up no other RPC of
        the page. Analytics is not needed to show a page: if that call fails, its error
        is kept for the page's posts, so each viewCount fails with it at once rather than
        asking the failing service again within the request."""
        ids = list(dict.fromkeys(post_ids))
        longest = max(comments, default=0)
        viewed = (
            asyncio.gather(*(self.metrics.load(i) for i in ids), return_exceptions=True)
            if views
            else None
        )
        backend = self._backend
        responses = await asyncio.gather(
            *(
                backend.call(
                    backend.content.BatchGetPosts,
                    content_pb2.BatchGetPostsRequest(
                        ids=ids[i : i + MAX_BATCH], include_stats=stats, comments_per_post=longest
                    ),
                )
                for i in range(0, len(ids), MAX_BATCH)
            )
        )
        found: dict[str, content_pb2.Post] = {}
        users: list[str] = []
        for response in responses:
            for post in response.posts:
                found[post.id] = post
                self.posts.prime(post.id, post)
                if authors:
                    users.append(post.author_id)
            for post_stats in response.stats:
                self.stats.prime(post_stats.post_id, post_stats)
            for page in response.comments:
                for size in comments:
                    self.comments.prime((page.post_id, size), list(page.comments[:size]))
                if commenters:
                    users += [comment.author_id for comment in page.comments]
        if users:
            await asyncio.gather(*(self.users.load(user) for user in users), return_exceptions=True)
        if viewed is not None:
            for post_id, metrics in zip(ids, await viewed, strict=True):
                if isinstance(metrics, BackendError):
                    # As in _loader: aiodataloader types a primed value as a value only,
                    # and keeps an Exception as the key's failure.
                    self.metrics.prime(post_id, cast(analytics_pb2.PostMetrics, metrics))
        return [found[i] if i in found else NotFound(f"no post has id {i}") for i in post_ids]

    def prime_posts(self, posts: Iterable[content_pb2.Post]) -> None:
        for post in posts:
            self.posts.prime(post.id, post)

    def forget_post(self, post_id: str) -> None:
        """Drops what a mutation of the post changed, so later fields read it fresh."""
        self.posts.clear(post_id)
        self.stats.clear(post_id)
        # Comments are kept by (post, page size); mutations are rare enough to drop all.
        self.comments.clear_all()

    def forget_user(self, user_id: str) -> None:
        self.users.clear(user_id)

    def _loader(
        self, load: Callable[[list[K]], Coroutine[Any, Any, list[V | Exception]]]
    ) -> DataLoader[K, V]:
        # aiodataloader types a batch function as returning values only, but it accepts an
        # Exception for a key: that key's load fails and the others succeed.
        return DataLoader(
            cast(Callable[[list[K]], Coroutine[Any, Any, list[V]]], load),
            max_batch_size=MAX_BATCH,
            loop=asyncio.get_running_loop(),
        )

    async def _load_users(self, ids: list[str]) -> list[user_pb2.User | Exception]:
        backend = self._backend
        response = await backend.call(
            backend.users.BatchGetUsers, user_pb2.BatchGetUsersRequest(ids=ids)
        )
        return _in_order(ids, {user.id: user for user in response.users}, "user")

    async def _load_users_by_handle(self, handles: list[str]) -> list[user_pb2.User | Exception]:
        # There is no batch lookup by handle; the loader still makes each handle one call.
        backend = self._backend
        found = await asyncio.gather(
            *(
                backend.call(backend.users.GetUser, user_pb2.GetUserRequest(handle=handle))
                for handle in handles
            ),
            return_exceptions=True,
        )
        users: list[user_pb2.User | Exception] = []
        for response in found:
            if isinstance(response, BackendError):
                users.append(response)
            elif isinstance(response, BaseException):
                raise response
            else:
                users.append(response.user)
                self.prime_users([response.user])
        return users

    async def _load_posts(self, ids: list[str]) -> list[content_pb2.Post | Exception]:
        backend = self._backend
        response = await backend.call(
            backend.content.BatchGetPosts, content_pb2.BatchGetPostsRequest(ids=ids)
        )
        return _in_order(ids, {post.id: post for post in response.posts}, "post")

    async def _load_stats(self, ids: list[str]) -> list[content_pb2.PostStats | Exception]:
        backend = self._backend
        response = await backend.call(
            backend.content.BatchGetPostStats, content_pb2.BatchGetPostStatsRequest(post_ids=ids)
        )
        return _in_order(ids, {stats.post_id: stats for stats in response.stats}, "post")

    async def _load_comments(
        self, keys: list[CommentsKey]
    ) -> list[list[content_pb2.Comment] | Exception]:
        # One RPC per distinct page size: BatchListComments takes one limit for all posts.
        post_ids: dict[int, list[str]] = {}
        for post_id, limit in keys:
            post_ids.setdefault(limit, []).append(post_id)
        backend = self._backend
        responses = await asyncio.gather(
            *(
                backend.call(
                    backend.content.BatchListComments,
                    content_pb2.BatchListCommentsRequest(post_ids=ids, limit_per_post=limit),
                )
                for limit, ids in post_ids.items()
            )
        )
        found = {
            (post.post_id, limit): list(post.comments)
            for limit, response in zip(post_ids, responses, strict=True)
            for post in response.posts
        }
        return [
            found[key] if key in found else NotFound(f"no post has id {key[0]}") for key in keys
        ]

    async def _load_metrics(self, ids: list[str]) -> list[analytics_pb2.PostMetrics | Exception]:
        backend = self._backend
        response = await backend.call(
            backend.analytics.BatchGetPostMetrics,
            analytics_pb2.BatchGetPostMetricsRequest(post_ids=ids),
        )
        return _in_order(ids, {each.post_id: each for each in response.metrics}, "post")


def _in_order(ids: list[str], found: dict[str, V], noun: str) -> list[V | Exception]:
    return [found[i] if i in found else NotFound(f"no {noun} has id {i}") for i in ids]
