"""Per-field resolvers: the gateway's loaders with every load its own RPC and nothing
kept, the N+1 pattern DataLoaders replace, for `./dev bench feed` to compare against.

The gateway keeps no switch for this (nothing in production would turn it on); the
bench and its test hand this class to build_app / serve_gateway as `loaders`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar, cast

from aiodataloader import DataLoader

from gateway.errors import GatewayError
from gateway.loaders import Loaders
from nova.content.v1 import content_pb2

K = TypeVar("K")
V = TypeVar("V")


class PerFieldLoaders(Loaders):
    """Loaders whose DataLoaders neither batch nor cache: a post's author, each of its
    three stats fields, its view count and each comment's author are one RPC apiece."""

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
        """Each post its own BatchGetPosts, and nothing fetched ahead: without a cache,
        it would be fetched again by each field."""

        async def one(post_id: str) -> content_pb2.Post | Exception:
            try:
                return await self.posts.load(post_id)
            except GatewayError as error:
                return error

        return list(await asyncio.gather(*(one(post_id) for post_id in post_ids)))

    def _loader(
        self, load: Callable[[list[K]], Coroutine[Any, Any, list[V | Exception]]]
    ) -> DataLoader[K, V]:
        # As in Loaders._loader: the batch function may return an Exception for a key.
        return DataLoader(
            cast(Callable[[list[K]], Coroutine[Any, Any, list[V]]], load),
            batch=False,
            cache=False,
            loop=asyncio.get_running_loop(),
        )
