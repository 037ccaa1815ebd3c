"""The analytics crash test: likes, comments and impressions flow while the relay, the
analytics consumer and the analytics service (its flusher, its chdb), each a real `nova`
subprocess, are killed with SIGKILL at random points and restarted. Afterwards every like
and comment is counted exactly once in ClickHouse, and every impression a
RecordImpressions call acknowledged is there (and none twice): views are at least the
acknowledged impressions and at most those plus the ones whose call died with the
service (accepted or not, the client cannot know).

The workload writes through the services' repositories (the real outbox path), in a
tenant of its own, and the counts are read back through the restarted service.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from grpc import aio

from nova.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from services.analytics.events import GROUP
from services.content.repository import ContentRepository
from services.registry import REGISTRY
from services.runtime.auth import Caller, TokenCodec
from services.runtime.db import Database, open_database
from services.runtime.process import migrate_services
from services.runtime.tenancy import registry as tenant_registry
from services.user.repository import UserRepository
from tests.brokers import free_port
from tests.conftest import fresh_database
from tests.integration.test_event_crash import Worker

SECRET = "crash-secret-" + "x" * 40
USERS = 30
POSTS = 40
LIKES = 300
COMMENTS = 120
IMPRESSIONS_PER_CALL = 20
KILLS_EACH = 3


@pytest.fixture
async def crash_database(server_url: str) -> AsyncIterator[str]:
    async with fresh_database(server_url, "nova_analytics_crash") as url:
        yield url


@dataclass
class Impressions:
    """What the impression sender saw, per post."""

    acknowledged: Counter[str] = field(default_factory=Counter)
    unknown: Counter[str] = field(default_factory=Counter)
    """Sent in calls that failed: staged or not, the client cannot tell."""
    calls: int = 0


async def _workload(
    db: Database, tenant: uuid.UUID, users: list[uuid.UUID]
) -> dict[str, Counter[str]]:
    """Posts, then likes and comments, 8 writes at a time; returns the likes and comments
    of each post, as written."""
    users_repo, content = UserRepository(db), ContentRepository(db)
    rng = random.Random(11)
    limit = asyncio.Semaphore(8)

    async def bounded(write: Awaitable[object]) -> None:
        async with limit:
            await write

    await asyncio.gather(
        *(
            bounded(
                users_repo.create_user(
                    tenant_id=tenant,
                    user_id=user,
                    handle=f"ac_{user.hex[:12]}",
                    email=f"{user.hex[:12]}@analytics-crash.test",
                    password_hash="not-a-real-hash",
                    display_name="Crash",
                )
            )
            for user in users
        )
    )
    posts = [
        (await content.create_post(tenant_id=tenant, author_id=rng.choice(users), text="p")).id
        for _ in range(POSTS)
    ]
    likes = sorted({(rng.choice(posts), rng.choice(users)) for _ in range(LIKES * 3)})[:LIKES]
    comments = [(rng.choice(posts), rng.choice(users)) for _ in range(COMMENTS)]
    await asyncio.gather(
        *(bounded(content.like_post(tenant_id=tenant, post_id=p, user_id=u)) for p, u in likes),
        *(
            bounded(content.create_comment(tenant_id=tenant, post_id=p, author_id=u, text="c"))
            for p, u in comments
        ),
    )
    return {
        "posts": Counter(str(p) for p in posts),
        "likes": Counter(str(p) for p, _ in likes),
        "comments": Counter(str(p) for p, _ in comments),
    }


async def _send_impressions(
    address: str, token: str, posts: list[str], seen: Impressions, done: asyncio.Event
) -> None:
    """RecordImpressions calls, one after another, until `done`; a failed call is not
    retried (a retry could count an accepted one twice)."""
    rng = random.Random(5)
    metadata = (("authorization", f"Bearer {token}"),)
    async with aio.insecure_channel(address) as channel:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
        while not done.is_set():
            chosen = [rng.choice(posts) for _ in range(IMPRESSIONS_PER_CALL)]
            request = analytics_pb2.RecordImpressionsRequest(
                impressions=[analytics_pb2.Impression(post_id=p, dwell_ms=10) for p in chosen]
            )
            seen.calls += 1
            try:
                await stub.RecordImpressions(request, metadata=metadata, timeout=2)
            except aio.AioRpcError:
                seen.unknown.update(chosen)
                await asyncio.sleep(0.1)
            else:
                seen.acknowledged.update(chosen)
            await asyncio.sleep(0.01)


async def _killer(workers: list[Worker], done: asyncio.Event) -> None:
    rng = random.Random()
    while any(worker.kills < KILLS_EACH for worker in workers):
        await asyncio.sleep(rng.uniform(1.0, 3.0))  # past start-up, into the work
        victim = rng.choice([w for w in workers if w.kills < KILLS_EACH])
        victim.kill()
        victim.start()
    done.set()


async def _metrics(address: str, token: str, posts: list[str]) -> dict[str, tuple[int, int, int]]:
    async with aio.insecure_channel(address) as channel:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
        answer = await stub.BatchGetPostMetrics(
            analytics_pb2.BatchGetPostMetricsRequest(post_ids=posts),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=5,
            wait_for_ready=True,
        )
    return {m.post_id: (m.views, m.likes, m.comments) for m in answer.metrics}


def _settled(
    metrics: dict[str, tuple[int, int, int]],
    written: dict[str, Counter[str]],
    seen: Impressions,
) -> bool:
    return all(
        likes == written["likes"][post]
        and comments == written["comments"][post]
        and views >= seen.acknowledged[post]
        for post, (views, likes, comments) in metrics.items()
    )


async def test_sigkills_lose_no_accepted_impression_and_count_no_event_twice(
    crash_database: str, tmp_path: Path
) -> None:
    tenant = uuid.uuid4()
    users = [uuid.uuid4() for _ in range(USERS)]
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    env |= {
        "NOVA_DATABASE_URL": crash_database,
        "NOVA_DATA_DIR": str(tmp_path),
        "NOVA_AUTH_SECRET": SECRET,
        "NOVA_BIND_HOST": "127.0.0.1",
        "NOVA_ANALYTICS_PORT": str(port),
        "NOVA_ANALYTICS_FLUSH_INTERVAL_MS": "200",
        # One viewer sends a call every 10 ms: far above a person's rate.
        "NOVA_ANALYTICS_IMPRESSION_CALLS_PER_MINUTE": "1000000",
        "NOVA_ANALYTICS_IMPRESSION_CALLS_BURST": "1000000",
        # A batch a killed flusher left is picked up by the restarted one at its start.
        "NOVA_ANALYTICS_STALE_AFTER_MS": "2000",
        "NOVA_RELAY_BATCH_SIZE": "40",
        "NOVA_DB_POOL_SIZE": "4",
        "NOVA_LOG_LEVEL": "WARNING",
    }
    codec = TokenCodec(secret=SECRET, ttl=timedelta(hours=1))
    token, _ = codec.issue(Caller(user_id=users[0], tenant_id=tenant, handle="viewer"))
    async with open_database(crash_database, size=10, acquire_timeout_ms=10_000) as db:
        await migrate_services(db, REGISTRY.services.values(), REGISTRY.consumers.values())
        async with db.transaction() as conn:
            await tenant_registry.create(conn, "crash", tenant_id=tenant)
        workers = [
            Worker(["relay"], env, tmp_path / "relay.log"),
            Worker(["events", "consume", "--group", GROUP], env, tmp_path / "consumer.log"),
            Worker(["serve", "analytics"], env, tmp_path / "analytics.log"),
        ]
        for worker in workers:
            worker.start()
        seen = Impressions()
        try:
            written = await _workload(db, tenant, users)
            posts = sorted(written["posts"])
            done = asyncio.Event()
            await asyncio.gather(
                _killer(workers, done), _send_impressions(address, token, posts, seen, done)
            )
            metrics: dict[str, tuple[int, int, int]] = {}
            for _ in range(600):
                try:
                    metrics = await _metrics(address, token, posts)
                except aio.AioRpcError:
                    metrics = {}
                if metrics and _settled(metrics, written, seen):
                    await asyncio.sleep(1.5)  # anything late would show now as extra
                    metrics = await _metrics(address, token, posts)
                    break
                await asyncio.sleep(0.1)
        finally:
            for worker in workers:
                worker.stop()
    logs = "\n".join(w.log.read_text(errors="replace")[-3000:] for w in workers)
    assert all(worker.kills >= KILLS_EACH for worker in workers)
    assert seen.acknowledged.total() > 0, f"no impression was acknowledged\n{logs}"
    assert metrics, f"the service did not answer after the kills\n{logs}"
    for post in posts:
        views, likes, comments = metrics[post]
        assert likes == written["likes"][post], f"{post}: {likes} likes\n{logs}"
        assert comments == written["comments"][post], f"{post}: {comments} comments\n{logs}"
        assert seen.acknowledged[post] <= views, f"{post}: an acknowledged view was lost\n{logs}"
        assert views <= seen.acknowledged[post] + seen.unknown[post], f"{post}: counted twice"
