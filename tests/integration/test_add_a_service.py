"""Adding a service is its SPEC plus one registry line: a throwaway one, registered beside
the real ones, gets its port and address, its schema and outbox, its event topic (which the
relay publishes and every consumer group reads), a stub in the gateway, and its line in
the `nova up` banner, with no other change anywhere."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpc import aio
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.settings import GatewaySettings
from nova.events.v1 import events_pb2
from nova.feed.v1 import feed_pb2, feed_pb2_grpc
from services.audit.repository import list_entries
from services.cli.up import Running, running
from services.registry import REGISTRY
from services.runtime.config import Config
from services.runtime.events import outbox
from services.runtime.events.envelope import new_event
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.spec import Dependencies, Registry, ServiceSpec
from tests.conftest import fresh_database

SCHEMA = "probe_service"


class ProbeServicer(feed_pb2_grpc.FeedServiceServicer):
    """Answers GetHomeFeed with the rows of its own table (so its migration ran)."""

    def __init__(self, deps: Dependencies) -> None:
        self._db = deps.db

    async def GetHomeFeed(
        self, request: feed_pb2.GetHomeFeedRequest, context: aio.ServicerContext[Any, Any]
    ) -> feed_pb2.GetHomeFeedResponse:
        async with self._db.connection() as conn:
            rows = await conn.fetch(f"SELECT post_id FROM {SCHEMA}.items ORDER BY post_id")
        return feed_pb2.GetHomeFeedResponse(
            items=[feed_pb2.FeedItem(post_id=row["post_id"]) for row in rows]
        )


def _probe_spec(migrations: Path) -> ServiceSpec:
    def add_to_server(server: aio.Server, deps: Dependencies) -> None:
        feed_pb2_grpc.add_FeedServiceServicer_to_server(ProbeServicer(deps), server)

    return ServiceSpec(
        name="probe",
        service=feed_pb2.DESCRIPTOR.services_by_name["FeedService"],
        stub=feed_pb2_grpc.FeedServiceStub,
        default_port=50099,
        schema=SCHEMA,
        migrations=migrations,
        add_to_server=add_to_server,
        aggregate_types=("probe",),
    )


@pytest.fixture
async def started(server_url: str, tmp_path: Path) -> AsyncIterator[tuple[Running, Config]]:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_create_items.sql").write_text(
        f"CREATE TABLE {SCHEMA}.items (post_id text PRIMARY KEY);\n"
        f"INSERT INTO {SCHEMA}.items VALUES ('p1'), ('p2');\n"
    )
    registry = Registry.of(
        [*REGISTRY.services.values(), _probe_spec(migrations)],
        list(REGISTRY.consumers.values()),
    )
    async with fresh_database(server_url, "probe") as url:
        env = {f"NOVA_{name.upper()}_PORT": "0" for name in registry.services}
        env |= {
            "NOVA_DATABASE_URL": url,
            "NOVA_DATA_DIR": str(tmp_path / "data"),
            "NOVA_BIND_HOST": "127.0.0.1",
            "NOVA_AUTH_SECRET": "probe-secret-" + "x" * 40,
            "NOVA_SHUTDOWN_GRACE_SECONDS": "0",
            "NOVA_RELAY_POLL_MS": "50",
        }
        config = Config.from_env(env, default_ports=registry.default_ports)
        gateway = GatewaySettings(port=0)
        async with running(config, registry, list(registry.services), gateway, events=True) as it:
            yield it, config


async def test_a_registered_service_is_configured_served_migrated_published_and_called(
    started: tuple[Running, Config],
) -> None:
    nova, config = started
    # Its port and address come from its SPEC (NOVA_PROBE_PORT was read: 0, any free one).
    assert config.ports["probe"] == 0
    assert config.addresses["probe"] == "127.0.0.1:0"
    # The banner lists it with its proto service and the port it bound.
    (line,) = [line for line in nova.banner if line.startswith("probe ")]
    assert "nova.feed.v1.FeedService" in line
    address = line.split()[-1]

    async with aio.insecure_channel(address) as channel:
        # Served behind the chain, with reflection, and its migration ran.
        reply = await feed_pb2_grpc.FeedServiceStub(channel).GetHomeFeed(
            feed_pb2.GetHomeFeedRequest(), timeout=5
        )
        assert [item.post_id for item in reply.items] == ["p1", "p2"]
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        listed = [s.name async for a in answers for s in a.list_services_response.service]
        assert "nova.feed.v1.FeedService" in listed

    # The gateway got a stub for it, and calls it through its client stack.
    assert nova.gateway is not None
    clients = nova.gateway.app.executor.clients
    stub = clients.stubs["probe"]
    reply = await stub.GetHomeFeed(feed_pb2.GetHomeFeedRequest(), timeout=5)
    assert len(reply.items) == 2
    assert clients.counter.calls["/nova.feed.v1.FeedService/GetHomeFeed"] == 1

    # Its outbox exists; an event written there is relayed on its own topic, which the
    # audit group (subscribed to every registered topic) records.
    aggregate = str(uuid.uuid4())
    event = new_event(
        tenant_id=DEFAULT_TENANT_ID,
        aggregate_type="probe",
        aggregate_id=aggregate,
        payload=events_pb2.PostLiked(post_id=aggregate, user_id=str(uuid.uuid4())),
    )
    assert event.topic == "nova.probe.v1"
    assert nova.deps is not None
    db = nova.deps.db
    async with db.transaction() as conn:
        await outbox.append(conn, SCHEMA, [event])
    for _ in range(200):
        page = await list_entries(db, DEFAULT_TENANT_ID, aggregate_id=aggregate)
        if page.entries:
            break
        await asyncio.sleep(0.05)
    assert [entry.event_id for entry in page.entries] == [event.event_id]
    assert page.entries[0].aggregate_type == "probe"
