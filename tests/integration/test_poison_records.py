"""Records that are not events, on both transports: a row of the PostgreSQL log whose
envelope is corrupt, and on Kafka a tombstone or another producer's message. Each goes to
the dead letters with its raw bytes, topic, position and why; the group moves past it, the
good event behind it is applied, `nova events dlq` lists it and replay refuses it.

Each test uses a topic of its own, so it reads nothing that other tests published.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from nova.events.v1 import events_pb2
from services.runtime.db import Database
from services.runtime.errors import InvalidArgument
from services.runtime.events.consumer import ANY_EVENT, Consumer, ConsumerSettings
from services.runtime.events.dead_letters import (
    DeadLetter,
    list_dead_letters,
    request_replay,
)
from services.runtime.events.envelope import new_event
from services.runtime.events.kafka import KafkaTransport
from services.runtime.events.model import UNDECODABLE, Event, Transport, UndecodableRecord
from services.runtime.events.pglog import PostgresLog
from services.runtime.spec import Dependencies
from tests.brokers import single_node_transport
from tests.integration.test_event_transports import EXTERNAL_KAFKA

NOVA = str(Path(sys.executable).parent / "nova")
FAST = ConsumerSettings(batch_size=10, fetch_timeout_seconds=0.1, retry_backoff_seconds=0.01)

GARBAGE = bytes([0xFF, 0xFE, 0x00, 0x8F]) + b"not an envelope"
"""Bytes protobuf refuses to parse."""
FOREIGN_JSON = b'{"type": "order.created", "id": 42}'
"""Another producer's message: valid JSON, not an envelope."""
PROTOBUF_LOOKALIKE = events_pb2.PostCreated(post_id="p1").SerializeToString()
"""Parses as an EventEnvelope (protobuf keeps unknown fields) but carries none of it."""


@pytest.fixture(scope="module")
async def effects(deps: Dependencies) -> AsyncIterator[Database]:
    async with deps.db.connection() as conn:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS poison_test")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS poison_test.effects (group_name text, event_id uuid)"
        )
    yield deps.db
    async with deps.db.connection() as conn:
        await conn.execute("DROP SCHEMA poison_test CASCADE")


@pytest.fixture(scope="module")
async def kafka(kafka_bootstrap: str) -> AsyncIterator[KafkaTransport]:
    timeouts = {} if EXTERNAL_KAFKA else {"session_timeout_ms": 1000, "heartbeat_interval_ms": 100}
    async with single_node_transport(kafka_bootstrap, partitions=1, **timeouts) as transport:
        yield transport


def _good(aggregate_type: str) -> Event:
    post = uuid.uuid4()
    return new_event(
        tenant_id=uuid.uuid4(),
        aggregate_type=aggregate_type,
        aggregate_id=post,
        payload=events_pb2.PostCreated(post_id=str(post), author_id="a"),
    )


async def _consume(
    transport: Transport, db: Database, group: str, topic: str, seen: int
) -> Consumer:
    """Runs a consumer of `group` on `topic` until it has seen `seen` deliveries."""
    consumer = Consumer(group, transport, db, [topic], settings=FAST)

    async def record(conn: asyncpg.Connection, event: Event, _: events_pb2.EventEnvelope) -> None:
        await conn.execute("INSERT INTO poison_test.effects VALUES ($1, $2)", group, event.event_id)

    consumer.on(ANY_EVENT, record)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        for _ in range(1000):
            stats = consumer.stats
            if stats.processed + stats.dead_lettered >= seen:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"{group} did not get there in 20 s: {consumer.stats}")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    return consumer


async def _applied(db: Database, group: str) -> list[uuid.UUID]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT event_id FROM poison_test.effects WHERE group_name = $1", group
        )
    return [row["event_id"] for row in rows]


async def _check_dead_lettered_and_moved_on(
    transport: Transport, db: Database, group: str, topic: str, good: Event
) -> DeadLetter:
    """The common part: one dead letter, the good event applied, the next run goes on
    after both, and replay refuses the letter. Returns the letter."""
    first = await _consume(transport, db, group, topic, seen=2)
    assert (first.stats.dead_lettered, first.stats.processed) == (1, 1)
    assert await _applied(db, group) == [good.event_id]

    [letter] = await list_dead_letters(db, group)
    assert (letter.event_type, letter.topic, letter.attempts) == (UNDECODABLE, topic, 0)
    assert letter.undecodable is not None
    assert letter.error == f"undecodable record: {letter.undecodable}"
    with pytest.raises(UndecodableRecord):
        letter.event  # noqa: B018

    # The position was committed past it: a restarted member sees only what is new.
    later = _good(good.aggregate_type)
    async with transport.publisher() as publisher:
        await publisher.publish([later])
    second = await _consume(transport, db, group, topic, seen=1)
    assert (second.stats.dead_lettered, second.stats.processed) == (0, 1)
    assert await _applied(db, group) == [good.event_id, later.event_id]

    with pytest.raises(InvalidArgument, match=r"is not an event and cannot be replayed"):
        await request_replay(db, [letter.id])
    assert await request_replay(db, group=group) == []
    [still] = await list_dead_letters(db, group)
    assert (still.id, still.replayed_at) == (letter.id, None)
    return letter


def _topic_and_type() -> tuple[str, str]:
    aggregate_type = f"poison{uuid.uuid4().hex[:10]}"
    return f"nova.{aggregate_type}.v1", aggregate_type


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (GARBAGE, "not a protobuf EventEnvelope"),
        (FOREIGN_JSON, "not a protobuf EventEnvelope"),
        (PROTOBUF_LOOKALIKE, "not an EventEnvelope: no event_type"),
    ],
    ids=["random-bytes", "json", "protobuf-lookalike"],
)
async def test_log_row_that_is_not_an_envelope_is_dead_lettered_and_the_group_moves_on(
    effects: Database, database_url: str, raw: bytes, reason: str
) -> None:
    log, group = PostgresLog(effects), f"test-poison-{uuid.uuid4().hex[:8]}"
    topic, aggregate_type = _topic_and_type()
    good = _good(aggregate_type)
    async with effects.connection() as conn:
        seq = await conn.fetchval(
            """INSERT INTO nova_events.log (topic, key, event_id, event_type, envelope)
               VALUES ($1, 'k', $2, 'Mystery', $3) RETURNING seq""",
            topic,
            uuid.uuid4(),
            raw,
        )
    async with log.publisher() as publisher:
        await publisher.publish([good])

    letter = await _check_dead_lettered_and_moved_on(log, effects, group, topic, good)
    assert (letter.partition, letter.position, letter.envelope) == (0, seq, raw)
    assert (letter.undecodable or "").startswith(reason)

    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    env |= {"NOVA_DATABASE_URL": database_url, "NOVA_LOG_LEVEL": "WARNING", "COLUMNS": "250"}
    listing = await asyncio.create_subprocess_exec(
        NOVA, "events", "dlq", "--group", group, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(listing.communicate(), 60)
    assert listing.returncode == 0, err.decode()
    listed = out.decode()
    assert UNDECODABLE in listed
    assert f"@{seq}" in listed
    assert f"{len(raw)} bytes {raw[:8].hex()}" in listed, "the raw bytes, in hex"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "a tombstone: the record has no value"),
        (GARBAGE, "not a protobuf EventEnvelope"),
        (FOREIGN_JSON, "not a protobuf EventEnvelope"),
    ],
    ids=["tombstone", "random-bytes", "json"],
)
async def test_kafka_record_that_is_not_an_envelope_is_dead_lettered_and_the_group_moves_on(
    effects: Database, kafka: KafkaTransport, raw: bytes | None, reason: str
) -> None:
    group = f"test-poison-{uuid.uuid4().hex[:8]}"
    topic, aggregate_type = _topic_and_type()
    good = _good(aggregate_type)
    await kafka.ensure_topics([topic])
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, acks="all", enable_idempotence=False
    )
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, value=raw, key=good.key)
    finally:
        await producer.stop()
    async with kafka.publisher() as publisher:
        await publisher.publish([good])

    letter = await _check_dead_lettered_and_moved_on(kafka, effects, group, topic, good)
    assert (letter.partition, letter.position) == (sent.partition, sent.offset)
    assert letter.envelope == (raw or b"")
    assert (letter.undecodable or "").startswith(reason)
