"""The crash test: a few thousand writes while the relay and the audit consumer, each a
real `nova` subprocess, are killed with SIGKILL at random points several times and
restarted. Afterwards every event is on the transport at least once and every effect
happened exactly once — for the PostgreSQL log and for Kafka.

The effect counted is the audit consumer's per-tenant tally (`audit_service.event_counts`,
one `count + 1` per event), which would show any event applied twice; the audit log's
rows are counted too. The workload writes through the services' repositories, so events
come from the real outbox path; it uses a tenant of its own, so other tests' events on a
shared broker do not enter the counts.

Two bad things ride in the stream, as they would in production: a record that is not an
event (written straight to the transport by "another producer") and an event the audit
consumer cannot handle (a payload type this build does not know). The first is
dead-lettered and passed; the second is dead-lettered and the later events of its post
(likes) are parked behind it, while the rest flows on. At the end `nova events dlq discard`
gives up on both, the parked likes are applied, and the counts must still be exact.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from services.audit.consumer import GROUP
from services.content.events import post_liked
from services.content.repository import ContentRepository
from services.registry import REGISTRY
from services.runtime.db import Database, open_database
from services.runtime.events import outbox
from services.runtime.events.dead_letters import list_dead_letters
from services.runtime.events.model import topic_for
from services.runtime.events.pglog import _PUBLISH_LOCK
from services.runtime.events.settings import EventSettings
from services.runtime.events.transports import open_transport
from services.runtime.process import migrate_services
from services.user.repository import UserRepository
from tests.brokers import SINGLE_NODE_KAFKA_ENV
from tests.conftest import fresh_database

NOVA = str(Path(sys.executable).parent / "nova")
USERS = 150
POSTS = 900
LIKES = 700
FOLLOWS = 250
KILLS_EACH = 3
HELD_LIKES = 6
"""Likes of the post whose event cannot be handled: parked behind its dead letter."""
GARBAGE = b"\xff\xfe not an event envelope"


@pytest.fixture
async def crash_database(server_url: str) -> AsyncIterator[str]:
    async with fresh_database(server_url, "nova_crash") as url:
        yield url


@dataclass
class Worker:
    """A `nova` subprocess that can be killed and started again."""

    args: list[str]
    env: dict[str, str]
    log: Path
    kills: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [NOVA, *self.args], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def _workload(db: Database, tenant: uuid.UUID, kafka: str | None) -> int:
    """USERS users, POSTS posts, LIKES likes and FOLLOWS follows, 8 writes at a time,
    with the two bad records after the posts and HELD_LIKES likes of the post with the
    unhandled event; returns the number of good writes (each emits one event)."""
    users_repo, content = UserRepository(db), ContentRepository(db)
    rng = random.Random(7)
    limit = asyncio.Semaphore(8)

    async def bounded(write: Awaitable[object]) -> None:
        async with limit:
            await write

    users = [uuid.uuid4() for _ in range(USERS)]
    await asyncio.gather(
        *(
            bounded(
                users_repo.create_user(
                    tenant_id=tenant,
                    user_id=user,
                    handle=f"crash_{user.hex[:12]}",
                    email=f"{user.hex[:12]}@crash.test",
                    password_hash="not-a-real-hash",
                    display_name="Crash",
                )
            )
            for user in users
        )
    )

    async def post(index: int) -> uuid.UUID:
        async with limit:
            created = await content.create_post(
                tenant_id=tenant, author_id=rng.choice(users), text=f"post {index}"
            )
        return created.id

    posts = await asyncio.gather(*(post(index) for index in range(POSTS)))
    held, others = posts[0], posts[1:]
    await _write_bad_records(db, tenant, held, kafka)
    likes = {(rng.choice(others), rng.choice(users)) for _ in range(LIKES * 2)}
    likes_list = sorted(likes)[:LIKES] + [(held, user) for user in users[:HELD_LIKES]]
    await asyncio.gather(
        *(
            bounded(content.like_post(tenant_id=tenant, post_id=post, user_id=user))
            for post, user in likes_list
        )
    )
    follows = {tuple(rng.sample(users, 2)) for _ in range(FOLLOWS * 2)}
    follows_list = sorted(follows)[:FOLLOWS]
    await asyncio.gather(
        *(
            bounded(users_repo.follow(tenant_id=tenant, follower_id=a, followee_id=b))
            for a, b in follows_list
        )
    )
    return len(users) + len(posts) + len(likes_list) + len(follows_list)


async def _write_bad_records(
    db: Database, tenant: uuid.UUID, post: uuid.UUID, kafka: str | None
) -> None:
    """An event of `post` whose payload type this build does not know, through the
    content outbox; and a record that is not an event, straight onto the transport."""
    event = post_liked(tenant, post, uuid.uuid4())
    envelope = event.decode()
    envelope.event_type = "PostPromoted"
    envelope.payload.type_url = "type.googleapis.com/nova.events.v2.PostPromoted"
    unknown = replace(event, event_type="PostPromoted", envelope=envelope.SerializeToString())
    async with db.transaction() as conn:
        await outbox.append(conn, "content_service", [unknown])
    await _write_garbage(db, kafka, topic_for("post"))


async def _write_garbage(db: Database, kafka: str | None, topic: str) -> None:
    if kafka is None:
        async with db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _PUBLISH_LOCK)
            await conn.execute(
                """INSERT INTO nova_events.log (topic, key, event_id, event_type, envelope)
                   VALUES ($1, 'garbage', $2, 'Garbage', $3)""",
                topic,
                uuid.uuid4(),
                GARBAGE,
            )
        return
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=GARBAGE, key=b"garbage")
    finally:
        await producer.stop()


async def _killer(workers: list[Worker], done: asyncio.Event) -> None:
    """Kills a random worker at a random moment and starts it again, until the workload is
    done and each was killed KILLS_EACH times."""
    rng = random.Random()
    while not done.is_set() or any(worker.kills < KILLS_EACH for worker in workers):
        await asyncio.sleep(rng.uniform(0.8, 2.5))  # past start-up, into the work
        victim = rng.choice([w for w in workers if w.kills < KILLS_EACH] or workers)
        victim.kill()
        victim.start()


async def _settled(
    db: Database, tenant: uuid.UUID, expected: int, parked: int = 0
) -> tuple[int, int]:
    """Waits (up to 90 s) until the outboxes are empty, `parked` events wait in the audit
    group's parking and the tally reaches `expected`; returns (tally, audit rows)."""
    tally = rows = 0
    for _ in range(900):
        async with db.connection() as conn:
            unsent = sum(
                [
                    await conn.fetchval(
                        f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL"
                    )
                    for schema in REGISTRY.outbox_schemas
                ]
            )
            tally = await conn.fetchval(
                "SELECT coalesce(sum(count), 0) FROM audit_service.event_counts"
                " WHERE tenant_id = $1",
                tenant,
            )
            rows = await conn.fetchval(
                "SELECT count(*) FROM audit_service.audit_log WHERE tenant_id = $1", tenant
            )
            waiting = await conn.fetchval(
                "SELECT count(*) FROM nova_events.parked WHERE group_name = $1", GROUP
            )
        if unsent == 0 and tally >= expected and rows >= expected and waiting == parked:
            await asyncio.sleep(1)  # anything late would show now as an extra effect
            async with db.connection() as conn:
                tally = await conn.fetchval(
                    "SELECT coalesce(sum(count), 0) FROM audit_service.event_counts"
                    " WHERE tenant_id = $1",
                    tenant,
                )
            return int(tally), int(rows)
        await asyncio.sleep(0.1)
    return int(tally), int(rows)


async def _published_ids(db: Database, kafka: str | None, ours: set[uuid.UUID]) -> set[uuid.UUID]:
    """Which of `ours` the transport holds (read from the beginning by a new group)."""
    seen: set[uuid.UUID] = set()
    async with open_transport(db, EventSettings(kafka_bootstrap=kafka)) as transport:
        group = f"crash-check-{uuid.uuid4().hex[:8]}"
        async with transport.subscribe(group, REGISTRY.topics) as subscription:
            for _ in range(200):
                deliveries = await subscription.fetch(5000, 0.5)
                seen.update(d.event.event_id for d in deliveries if d.event.event_id in ours)
                if seen == ours or (not deliveries and len(seen) > 0 and seen == ours):
                    break
    return seen


async def test_on_the_postgres_log_sigkills_lose_nothing_and_apply_nothing_twice(
    crash_database: str, tmp_path: Path
) -> None:
    await _crash_test(crash_database, tmp_path, kafka=None)


async def test_on_kafka_sigkills_lose_nothing_and_apply_nothing_twice(
    crash_database: str, tmp_path: Path, kafka_bootstrap: str
) -> None:
    await _crash_test(crash_database, tmp_path, kafka=kafka_bootstrap)


async def _crash_test(crash_database: str, tmp_path: Path, *, kafka: str | None) -> None:
    tenant = uuid.uuid4()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    env |= {
        "NOVA_DATABASE_URL": crash_database,
        "NOVA_DATA_DIR": str(tmp_path),
        "NOVA_RELAY_BATCH_SIZE": "40",
        "NOVA_DB_POOL_SIZE": "4",
        "NOVA_LOG_LEVEL": "WARNING",
    }
    if kafka is not None:
        env["NOVA_KAFKA_BOOTSTRAP"] = kafka
        env |= SINGLE_NODE_KAFKA_ENV
    async with open_database(crash_database, size=12, acquire_timeout_ms=10_000) as db:
        await migrate_services(db, REGISTRY.services.values(), REGISTRY.consumers.values())
        workers = [
            Worker(["relay"], env, tmp_path / "relay.log"),
            Worker(["events", "consume", "--group", GROUP], env, tmp_path / "consumer.log"),
        ]
        for worker in workers:
            worker.start()
        try:
            done = asyncio.Event()
            killer = asyncio.create_task(_killer(workers, done))
            writes = await _workload(db, tenant, kafka)
            done.set()
            await killer
            # Everything but the held post's likes is applied; they wait behind its letter.
            held_tally, _ = await _settled(db, tenant, writes - HELD_LIKES, parked=HELD_LIKES)
            letters = await list_dead_letters(db, GROUP)
            discard = await asyncio.create_subprocess_exec(
                NOVA,
                *("events", "dlq", "discard", "--group", GROUP),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(discard.communicate(), 60)
            tally, rows = await _settled(db, tenant, writes)
        finally:
            for worker in workers:
                worker.stop()
        async with db.connection() as conn:
            ours = {
                row["event_id"]
                for schema in REGISTRY.outbox_schemas
                for row in await conn.fetch(
                    f"SELECT event_id FROM {schema}.outbox WHERE tenant_id = $1", tenant
                )
            }
        published = await _published_ids(db, kafka, ours)
    logs = "\n".join(w.log.read_text(errors="replace")[-2000:] for w in workers)
    assert held_tally == writes - HELD_LIKES, f"{held_tally} effects before the discard\n{logs}"
    assert sorted(letter.event_type for letter in letters) == ["(undecodable)", "PostPromoted"]
    [unknown] = [letter for letter in letters if letter.event_type == "PostPromoted"]
    assert unknown.parked == HELD_LIKES
    assert "payload type 'nova.events.v2.PostPromoted' is unknown" in unknown.error
    assert discard.returncode == 0, err.decode()
    assert f"discarded 2 dead letter(s); {HELD_LIKES} parked event(s)" in out.decode()
    assert all(worker.kills >= KILLS_EACH for worker in workers)
    assert len(ours) == writes + 1, "each write put one event in its outbox (+ the unknown)"
    assert published == ours, f"{len(ours - published)} events never published\n{logs}"
    assert rows == writes, f"audit log has {rows} rows for {writes} events\n{logs}"
    assert tally == writes, f"the tally counted {tally} effects for {writes} events\n{logs}"
