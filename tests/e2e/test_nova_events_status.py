"""`nova events status` as people run it, on each transport: one row per group and topic
with its position, lag, members, open dead letters and parked events, against a database
of its own (and on Kafka the session's broker)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from nova.events.v1 import events_pb2
from services.registry import REGISTRY
from services.runtime.db import Database, open_database
from services.runtime.events.envelope import new_event
from services.runtime.events.model import Delivery, Event
from services.runtime.events.pglog import PostgresLog
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.process import migrate_services
from tests.brokers import SINGLE_NODE_KAFKA_ENV, single_node_transport
from tests.conftest import fresh_database

NOVA = str(Path(sys.executable).parent / "nova")


@pytest.fixture(scope="module")
async def database(server_url: str) -> AsyncIterator[tuple[str, Database]]:
    async with (
        fresh_database(server_url, "nova_events_status") as url,
        open_database(url, size=4, acquire_timeout_ms=5000) as db,
    ):
        await migrate_services(db, REGISTRY.services.values(), REGISTRY.consumers.values())
        yield url, db


def _liked(count: int) -> list[Event]:
    post = uuid.uuid4()
    return [
        new_event(
            tenant_id=DEFAULT_TENANT_ID,
            aggregate_type="post",
            aggregate_id=post,
            payload=events_pb2.PostLiked(post_id=str(post), user_id=str(uuid.UUID(int=n))),
        )
        for n in range(count)
    ]


async def _hold_back(db: Database, group: str, events: list[Event]) -> None:
    """One open dead letter (and one replayed) for `group`, and one event parked behind."""
    async with db.connection() as conn:
        for event, replayed in ((events[0], False), (events[1], True)):
            await conn.execute(
                """INSERT INTO nova_events.dead_letters
                       (group_name, event_id, event_type, topic, envelope, error, attempts,
                        replayed_at)
                   VALUES ($1, $2, $3, $4, $5, 'RuntimeError: bug', 5,
                           CASE WHEN $6 THEN now() END)""",
                group,
                event.event_id,
                event.event_type,
                event.topic,
                event.envelope,
                replayed,
            )
        await conn.execute(
            """INSERT INTO nova_events.parked
                   (group_name, topic, aggregate_id, event_id, event_type, partition,
                    position, envelope)
               VALUES ($1, $2, $3, $4, $5, 0, 3, $6)""",
            group,
            events[2].topic,
            events[2].aggregate_id,
            events[2].event_id,
            events[2].event_type,
            events[2].envelope,
        )


async def _status(url: str, extra_env: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Runs `nova events status`; returns its table's rows by group and topic
    ("audit nova.post.v1"), each a list of its cells."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    env |= {"NOVA_DATABASE_URL": url, "NOVA_LOG_LEVEL": "WARNING", "COLUMNS": "200"}
    env |= extra_env or {}
    shown = await asyncio.to_thread(
        subprocess.run,
        [NOVA, "events", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    rows: dict[str, list[str]] = {}
    group = ""
    for line in shown.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│┃").split("│")]
        if len(cells) != 8 or cells[0] == "group":
            continue
        group = cells[0] or group
        rows[f"{group} {cells[1]}"] = cells
    assert rows, shown.stdout
    return rows


async def test_status_on_the_postgresql_log(database: tuple[str, Database]) -> None:
    url, db = database
    events = _liked(3)
    async with PostgresLog(db).publisher() as publisher:
        await publisher.publish(events)
    async with PostgresLog(db).subscribe("reporting", [events[0].topic]) as subscription:
        [first] = await subscription.fetch(1, 5.0)
        await subscription.commit([first])
    await _hold_back(db, "audit", events)

    rows = await _status(url)
    # Columns: group, topic, position, lag events, lag seconds, members, dead letters, parked.
    audit = rows["audit nova.post.v1"]
    assert audit[2:4] == ["-", "3"], "never ran: it would read the whole topic"
    assert audit[5:] == ["0 active", "1", "1"]
    assert rows["audit nova.user.v1"][2:4] == ["-", "0"]
    reporting = rows["reporting nova.post.v1"]
    assert reporting[2:4] == [str(first.offset), "2"]
    assert reporting[5:] == ["0 active", "0", "0"]
    assert float(reporting[4]) >= 0


async def test_status_on_kafka(database: tuple[str, Database], kafka_bootstrap: str) -> None:
    url, _ = database
    topic, group = f"nova.status{uuid.uuid4().hex[:8]}.v1", f"status-{uuid.uuid4().hex[:8]}"
    async with single_node_transport(
        kafka_bootstrap, partitions=2, session_timeout_ms=1000, heartbeat_interval_ms=100
    ) as kafka:
        await kafka.ensure_topics([topic])
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for _ in range(3):
                await producer.send_and_wait(topic, b"x", partition=0)
        finally:
            await producer.stop()
        async with kafka.subscribe(group, [topic]) as subscription:
            deadline = time.monotonic() + 20
            while len(subscription.consumer.assignment()) < 2:
                assert time.monotonic() < deadline, "the member never got both partitions"
                await subscription.fetch(10, 0.1)
            await subscription.commit([Delivery.of_record(b"", topic, 0, 0)])

    rows = await _status(url, {"NOVA_KAFKA_BOOTSTRAP": kafka_bootstrap, **SINGLE_NODE_KAFKA_ENV})
    mine = rows[f"{group} {topic}"]
    assert mine[2:4] == ["0:1 1:-", "2"]
    assert mine[5:] == ["0 active", "0", "0"]
    assert "audit nova.post.v1" in rows, "the build's groups are listed on Kafka too"
