"""Kafka durability against the real (Tansu) broker: the topics Nova creates carry the
configured retention, min.insync.replicas and replication; a replay older than the
retention is refused; the test broker refuses idempotent producers (why tests opt out);
and rows the relay marked sent are on the broker (relay.py awaits `publish`, which awaits
every send's acknowledgement, before its UPDATE; a failing publish is
tests/integration/test_relay.py's)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from nova.events.v1 import events_pb2
from services.runtime.events import outbox
from services.runtime.events.envelope import new_event
from services.runtime.events.kafka import KafkaTransport, ReplayBeyondRetentionError
from services.runtime.events.model import Event
from services.runtime.events.relay import Relay
from services.runtime.events.settings import EventSettings
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.spec import Dependencies
from tests.brokers import single_node_settings

_SEND_TIMEOUT_SECONDS = 20.0


@pytest.fixture
async def schema(deps: Dependencies) -> AsyncIterator[str]:
    name = f"kafka_settings_{uuid.uuid4().hex[:10]}"
    async with deps.db.connection() as conn:
        await outbox.migrate_outbox(conn, name)
    yield name
    async with deps.db.connection() as conn:
        await conn.execute(f"DROP SCHEMA {name} CASCADE")


def _settings(kafka_bootstrap: str, **changes: object) -> EventSettings:
    return replace(single_node_settings(EventSettings(), kafka_bootstrap), **changes)  # type: ignore[arg-type]


def _liked(aggregate_type: str, post_id: str) -> Event:
    return new_event(
        tenant_id=DEFAULT_TENANT_ID,
        aggregate_type=aggregate_type,
        aggregate_id=post_id,
        payload=events_pb2.PostLiked(post_id=post_id, user_id=str(uuid.uuid4())),
    )


async def test_created_topics_carry_the_configured_retention_and_replication(
    kafka_bootstrap: str,
) -> None:
    settings = _settings(kafka_bootstrap, kafka_retention_seconds=2 * 3600, kafka_partitions=2)
    topic = f"nova.retention_{uuid.uuid4().hex[:8]}.v1"
    async with KafkaTransport.from_settings(kafka_bootstrap, settings) as transport:
        await transport.ensure_topics([topic])
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    ((error_code, _, _, name, entries),) = response.resources
    assert (error_code, name) == (0, topic)
    configs = {entry[0]: entry[1] for entry in entries}
    assert configs["retention.ms"] == str(2 * 3600 * 1000)
    assert configs["min.insync.replicas"] == "1"
    assert [len(partition["replicas"]) for partition in described["partitions"]] == [1, 1]


async def test_a_replay_from_before_the_retention_is_refused(kafka_bootstrap: str) -> None:
    settings = _settings(kafka_bootstrap, kafka_retention_seconds=3600)
    topic = f"nova.replay_{uuid.uuid4().hex[:8]}.v1"
    async with KafkaTransport.from_settings(kafka_bootstrap, settings) as transport:
        too_old = datetime.now(UTC) - timedelta(hours=1, minutes=1)
        with pytest.raises(ReplayBeyondRetentionError, match="NOVA_KAFKA_RETENTION_HOURS"):
            await transport.rewind("replay-too-old", [topic], too_old)
        # Nothing was touched: the refusal comes before any topic or group exists.
        assert topic not in await _topics(kafka_bootstrap)


async def test_the_test_broker_refuses_idempotent_producers(kafka_bootstrap: str) -> None:
    # Why tests (tests/brokers.py) opt out of NOVA_KAFKA_IDEMPOTENT: Tansu answers
    # InitProducerId with an error. Once it supports them this fails: drop the opt-out.
    refused = _settings(kafka_bootstrap, kafka_idempotent=True)
    async with KafkaTransport.from_settings(kafka_bootstrap, refused) as transport:
        with pytest.raises(KafkaError):
            async with transport.publisher():
                pass


async def test_relayed_rows_are_on_the_broker_once_marked_sent(
    deps: Dependencies, schema: str, kafka_bootstrap: str
) -> None:
    aggregate_type = f"settings_{uuid.uuid4().hex[:8]}"
    events = [_liked(aggregate_type, f"post-{index}") for index in range(3)]
    async with deps.db.transaction() as conn:
        await outbox.append(conn, schema, events)
    settings = _settings(kafka_bootstrap, kafka_partitions=1)
    async with KafkaTransport.from_settings(kafka_bootstrap, settings) as transport:
        async with transport.publisher() as publisher:
            relay = Relay(deps.db, publisher, [schema], settings)
            assert await asyncio.wait_for(relay.relay_once(schema), _SEND_TIMEOUT_SECONDS) == 3
        # The producer is stopped: what was marked sent must already be on the broker.
        assert await _unsent(deps, schema) == 0
        async with transport.subscribe(f"check-{aggregate_type}", [events[0].topic]) as reader:
            received: list[uuid.UUID] = []
            for _ in range(40):
                received += [d.event.event_id for d in await reader.fetch(100, 0.5)]
                if len(received) >= 3:
                    break
    assert received == [event.event_id for event in events]


async def _unsent(deps: Dependencies, schema: str) -> int:
    async with deps.db.connection() as conn:
        count = await conn.fetchval(f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL")
    assert isinstance(count, int)
    return count


async def _topics(kafka_bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()
