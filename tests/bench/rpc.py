"""`./dev bench rpc`: raw gRPC latency of the user and content services at one fixed rate.

The server runs in its own process (`nova up` on free ports), as it would in production,
so the client's CPU is not charged to it and its RSS can be read on its own. Every RPC is
driven at the same offered rate in one run, Health/Check first: it does no I/O, so it is
the ceiling a Python gRPC server reaches on this machine, and the gap between it and the
other rows is what the services themselves cost. Calls are made as signed-in demo users,
so the auth interceptor and viewer-dependent fields are part of that cost.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import click
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.progress import Progress
from rich.table import Table

from nova.content.v1 import content_pb2, content_pb2_grpc
from nova.user.v1 import user_pb2, user_pb2_grpc
from services.cli.seed import Seeded, SeedPlan, seed
from tests.bench.harness import (
    LOAD_COLUMNS,
    ServerProcess,
    console,
    error_counts,
    load_cells,
    nova_up,
    open_channels,
    run,
)
from tests.bench.loadgen import Call, Load, LoadResult, generate

BATCH_SIZE = 20

_SERVICES = ("user", "content")

T = TypeVar("T")


@dataclass(frozen=True)
class RpcBench:
    load: Load
    """Applied to each RPC in turn."""
    users: int
    """Demo users to seed; posts and the rest scale with them."""


@dataclass(frozen=True)
class Scenario:
    name: str
    call: Call


@dataclass(frozen=True)
class Row:
    name: str
    result: LoadResult
    server_rss_bytes: int


async def bench_rpc(options: RpcBench) -> None:
    """Starts a server, seeds it, measures every scenario and prints the table."""
    out = console()
    load = options.load
    async with nova_up(_SERVICES) as server:
        with Progress(console=out) as progress:
            seeded = await seed(
                server.addresses,
                SeedPlan(
                    users=options.users,
                    posts_per_user=2,
                    follows_per_user=5,
                    comments_per_post=1,
                    likes_per_post=2,
                ),
                progress=progress,
            )
        rows = []
        async with _channels(server) as channels:
            for scenario in scenarios(channels, seeded):
                out.print(
                    f"bench: {scenario.name} at {load.rate:g}/s "
                    f"({load.warmup:g} s warm-up, {load.duration:g} s measured)"
                )
                result = await generate(scenario.call, load)
                rows.append(Row(scenario.name, result, server_rss_bytes=server.rss_bytes()))
        out.print(table(rows, options))


def scenarios(channels: Mapping[str, Sequence[aio.Channel]], seeded: Seeded) -> list[Scenario]:
    """The RPCs measured, each rotating over channels, callers and the seeded ids."""
    health = _rotate([health_pb2_grpc.HealthStub(c) for c in channels["user"]])
    users = _rotate([user_pb2_grpc.UserServiceStub(c) for c in channels["user"]])
    content = _rotate([content_pb2_grpc.ContentServiceStub(c) for c in channels["content"]])
    caller = _rotate(seeded.users)
    user_ids = _rotate([user.id for user in seeded.users])
    post_ids = _rotate(seeded.post_ids)

    def batch(ids: Callable[[], str]) -> list[str]:
        return [ids() for _ in range(BATCH_SIZE)]

    async def health_check() -> None:
        await health().Check(health_pb2.HealthCheckRequest())

    async def get_user() -> None:
        await users().GetUser(user_pb2.GetUserRequest(id=user_ids()), metadata=caller().metadata)

    async def batch_get_users() -> None:
        request = user_pb2.BatchGetUsersRequest(ids=batch(user_ids))
        await users().BatchGetUsers(request, metadata=caller().metadata)

    async def batch_get_posts() -> None:
        request = content_pb2.BatchGetPostsRequest(ids=batch(post_ids))
        await content().BatchGetPosts(request, metadata=caller().metadata)

    return [
        Scenario("Health/Check", health_check),
        Scenario("UserService/GetUser", get_user),
        Scenario(f"UserService/BatchGetUsers ({BATCH_SIZE} ids)", batch_get_users),
        Scenario(f"ContentService/BatchGetPosts ({BATCH_SIZE} ids)", batch_get_posts),
    ]


def table(rows: Sequence[Row], options: RpcBench) -> Table:
    load = options.load
    result = Table(
        title=(
            f"bench rpc: {load.duration:g} s per rpc after {load.warmup:g} s warm-up, "
            f"{options.users} users, max {load.max_outstanding} outstanding"
        ),
        title_justify="left",
    )
    result.add_column("rpc", no_wrap=True)
    for heading in LOAD_COLUMNS:
        result.add_column(heading, justify="right")
    result.add_column("errors")
    result.add_column("server RSS MiB", justify="right")
    for row in rows:
        result.add_row(
            row.name,
            *load_cells(row.result),
            error_counts(row.result.errors),
            f"{row.server_rss_bytes / 2**20:.0f}",
        )
    return result


@asynccontextmanager
async def _channels(server: ServerProcess) -> AsyncIterator[dict[str, list[aio.Channel]]]:
    async with AsyncExitStack() as stack:
        yield {
            name: await stack.enter_async_context(open_channels(server.addresses[name]))
            for name in _SERVICES
        }


def _rotate(items: Sequence[T]) -> Callable[[], T]:
    cycle = itertools.cycle(items)
    return lambda: next(cycle)


@click.command(name="rpc")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=500,
    show_default=True,
    help="Calls started per second, whatever the replies do.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=10,
    show_default=True,
    help="Seconds measured per rpc.",
)
@click.option(
    "--warmup",
    type=click.FloatRange(min=0),
    default=2,
    show_default=True,
    help="Seconds of unmeasured calls before each rpc's measurement.",
)
@click.option(
    "--max-outstanding",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Calls in flight at most; calls due beyond it count as client_overloaded errors.",
)
@click.option(
    "--users",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Demo users to seed first.",
)
def command(rate: float, duration: float, warmup: float, max_outstanding: int, users: int) -> None:
    """Latency of Health/Check, GetUser, BatchGetUsers and BatchGetPosts at a fixed rate,
    against `nova up` started in a subprocess on free ports."""
    try:
        load = Load(rate=rate, duration=duration, warmup=warmup, max_outstanding=max_outstanding)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    run(bench_rpc(RpcBench(load=load, users=users)))
