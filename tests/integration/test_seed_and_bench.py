"""`seed()` makes what it reports (checked through the read RPCs), and `./dev bench rpc`
runs end to end against its own server subprocess."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from grpc import aio

from nova.common.v1 import page_pb2
from nova.content.v1 import content_pb2, content_pb2_grpc
from nova.user.v1 import user_pb2
from services.cli.seed import DEMO_PASSWORD, SeedError, SeedPlan, seed
from tests.conftest import EventsSettled, fresh_database

if TYPE_CHECKING:
    from nova.user.v1.user_pb2_grpc import UserServiceAsyncStub

PLAN = SeedPlan(
    users=4, posts_per_user=2, follows_per_user=2, comments_per_post=3, likes_per_post=3
)
NOVA = str(Path(sys.executable).with_name("nova"))
REPOSITORY = Path(__file__).parents[2]
"""Where `python -m tests.bench` finds the tests package, as `./dev bench` runs it."""


async def test_seed_creates_the_users_follows_posts_comments_and_likes_it_reports(
    addresses: dict[str, str],
    channels: dict[str, aio.Channel],
    users: UserServiceAsyncStub,
    feed_events: EventsSettled,
) -> None:
    seeded = await seed(addresses, PLAN, concurrency=4, rng_seed=7)

    assert len(seeded.users) == 4
    assert len(seeded.post_ids) == 8
    assert (seeded.follows, seeded.comments, seeded.likes) == (8, 24, 24)
    assert seeded.calls == 2 * 4 + 8 + 8 + 24 + 24

    found = await users.BatchGetUsers(
        user_pb2.BatchGetUsersRequest(ids=[user.id for user in seeded.users])
    )
    assert [user.id for user in found.users] == [user.id for user in seeded.users]
    assert all(user.following_count == 2 for user in found.users)
    assert sum(user.follower_count for user in found.users) == 8

    content = content_pb2_grpc.ContentServiceStub(channels["content"])
    for index, user in enumerate(seeded.users):
        listed = await content.ListUserPosts(
            content_pb2.ListUserPostsRequest(user_id=user.id, page=page_pb2.PageRequest())
        )
        assert sorted(post.id for post in listed.posts) == sorted(
            seeded.post_ids[2 * index : 2 * index + 2]
        )
    stats = await content.BatchGetPostStats(
        content_pb2.BatchGetPostStatsRequest(post_ids=seeded.post_ids)
    )
    assert [(s.comment_count, s.like_count) for s in stats.stats] == [(3, 3)] * 8

    signed_in = await users.Authenticate(
        user_pb2.AuthenticateRequest(login=seeded.users[0].handle, password=DEMO_PASSWORD)
    )
    assert signed_in.user.id == seeded.users[0].id


async def test_seeding_twice_with_one_rng_seed_adds_a_second_community_of_the_same_shape(
    addresses: dict[str, str], users: UserServiceAsyncStub
) -> None:
    plan = SeedPlan(users=5, posts_per_user=0, follows_per_user=2)
    first = await seed(addresses, plan, rng_seed=42)
    second = await seed(addresses, plan, rng_seed=42)

    assert first.run != second.run
    assert {u.handle for u in first.users}.isdisjoint(u.handle for u in second.users)

    async def follower_counts(ids: list[str]) -> list[int]:
        found = await users.BatchGetUsers(user_pb2.BatchGetUsersRequest(ids=ids))
        return [user.follower_count for user in found.users]

    assert await follower_counts([u.id for u in first.users]) == await follower_counts(
        [u.id for u in second.users]
    )


async def test_a_failed_call_stops_the_seed_with_the_call_status_and_message() -> None:
    dead = f"127.0.0.1:{_unused_port()}"
    with pytest.raises(SeedError) as error:
        await seed({"user": dead, "content": dead}, SeedPlan(users=3))
    message = str(error.value)
    assert message.startswith("UserService.CreateUser of d")
    assert "failed: UNAVAILABLE: " in message


def test_nova_seed_reports_an_rpc_failure_in_one_line_without_a_traceback(
    tmp_path: Path,
) -> None:
    dead = f"127.0.0.1:{_unused_port()}"
    env = {**_env(tmp_path), "NOVA_USER_ADDRESS": dead, "NOVA_CONTENT_ADDRESS": dead}
    done = subprocess.run(
        [NOVA, "seed", "--users", "2"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error_lines) == 1
    assert "UserService.CreateUser" in error_lines[0]
    assert "UNAVAILABLE" in error_lines[0]


async def test_bench_rpc_serves_seeds_and_measures_every_rpc(
    server_url: str, tmp_path: Path
) -> None:
    arguments = ["--rate", "50", "--duration", "1", "--warmup", "0.2", "--users", "5"]
    # A database of its own: its `nova up` runs the consumer groups, which on the session's
    # database would wait behind this session's members of the same groups.
    async with fresh_database(server_url, "benchrpc") as url:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "tests.bench", "rpc", *arguments],
            cwd=REPOSITORY,
            env={**_env(tmp_path), "NOVA_DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    rows = Counter(
        name
        for line in done.stdout.splitlines()
        for name in (
            "Health/Check",
            "UserService/GetUser",
            "UserService/BatchGetUsers (20 ids)",
            "ContentService/BatchGetPosts (20 ids)",
        )
        if line.startswith(f"│ {name} ")
    )
    assert len(rows) == 4, done.stdout
    assert "p99.9 ms" in done.stdout


def _env(tmp_path: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("NOVA_") and key.lower() not in ("http_proxy", "https_proxy")
    }
    env.update(NOVA_DATA_DIR=str(tmp_path), NOVA_PASSWORD_HASH_PROFILE="insecure-fast")
    return env


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
