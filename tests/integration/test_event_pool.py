"""`nova up` gives the event machinery (relay, its LISTEN, the log subscriptions, the
consumers) a pool of its own: with every one of its connections taken, RPCs still get
theirs, and the event pool never grows past NOVA_EVENTS_DB_POOL_SIZE."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import pytest
from grpc import aio

from nova.user.v1 import user_pb2, user_pb2_grpc
from services.cli.up import Running, running
from services.registry import REGISTRY
from services.runtime.config import Config, ConfigError
from services.runtime.db import Database
from services.runtime.errors import ResourceExhausted
from services.runtime.process import EVENTS_APPLICATION_NAME
from tests.conftest import chdb_env, fresh_database

RPC_POOL = 2
EVENT_POOL = 3 + 2 * len(REGISTRY.consumers)
"""The least `nova up` accepts for the relay and the registry's consumer groups."""


@pytest.fixture
async def started(server_url: str, tmp_path: Path) -> AsyncIterator[tuple[Running, str]]:
    async with fresh_database(server_url, "eventpool") as url:
        env = {f"NOVA_{name.upper()}_PORT": "0" for name in REGISTRY.services}
        env |= {
            "NOVA_DATABASE_URL": url,
            "NOVA_DATA_DIR": str(tmp_path / "data"),
            **chdb_env(),
            **chdb_env(),
            "NOVA_BIND_HOST": "127.0.0.1",
            "NOVA_AUTH_SECRET": "pool-secret-" + "x" * 40,
            "NOVA_PASSWORD_HASH_PROFILE": "insecure-fast",
            "NOVA_SHUTDOWN_GRACE_SECONDS": "0",
            "NOVA_RELAY_POLL_MS": "50",
            "NOVA_DB_POOL_SIZE": str(RPC_POOL),
            "NOVA_EVENTS_DB_POOL_SIZE": str(EVENT_POOL),
            "NOVA_DB_ACQUIRE_TIMEOUT_MS": "200",
        }
        config = Config.from_env(env, default_ports=REGISTRY.default_ports)
        async with running(config, REGISTRY, list(REGISTRY.services), None, events=True) as it:
            yield it, url


async def _event_connections(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = $1 AND datname = current_database()",
            EVENTS_APPLICATION_NAME,
        )
        return count
    finally:
        await conn.close()


async def _take_free(stack: AsyncExitStack, db: Database) -> int:
    """Holds `db`'s connections in `stack` until none comes free; how many it took."""
    taken = 0
    while True:
        try:
            await stack.enter_async_context(db.connection())
        except ResourceExhausted:
            return taken
        taken += 1
        assert taken <= EVENT_POOL, "the event pool grew past its size"


async def test_rpcs_answer_while_every_event_connection_is_taken(
    started: tuple[Running, str],
) -> None:
    nova, url = started
    assert nova.deps is not None
    assert nova.events_db is not None
    assert nova.deps.db.pool.get_max_size() == RPC_POOL
    events_db = nova.events_db
    (line,) = [line for line in nova.banner if line.startswith("user ")]
    address = line.split()[-1]

    async with AsyncExitStack() as held:
        # Take whatever the relay's LISTEN and the groups' subscriptions left free.
        taken = await _take_free(held, events_db)
        assert 1 <= taken <= EVENT_POOL
        with pytest.raises(ResourceExhausted, match="the database is busy"):
            await held.enter_async_context(events_db.connection())
        assert events_db.pool.get_size() == EVENT_POOL
        assert await _event_connections(url) == EVENT_POOL

        # Each sign-up writes an outbox row the starved relay cannot send: RPCs still
        # answer, more at once than the RPC pool holds.
        async with aio.insecure_channel(address) as channel:
            users = user_pb2_grpc.UserServiceStub(channel)
            handles = [f"pool{uuid.uuid4().hex[:10]}" for _ in range(RPC_POOL * 2)]
            replies = await asyncio.gather(
                *(
                    users.CreateUser(
                        user_pb2.CreateUserRequest(
                            handle=handle, email=f"{handle}@example.com", password="hopper1906"
                        ),
                        timeout=10,
                    )
                    for handle in handles
                )
            )
            assert sorted(reply.user.handle for reply in replies) == sorted(handles)
            fetched = await users.GetUser(user_pb2.GetUserRequest(handle=handles[0]), timeout=10)
            assert fetched.user.handle == handles[0]

        # The busy relay and consumer kept to their bound.
        assert events_db.pool.get_size() == EVENT_POOL
        assert await _event_connections(url) == EVENT_POOL


@pytest.mark.parametrize(
    ("value", "accepted"), [("3", True), ("100", True), ("2", False), ("101", False)]
)
def test_the_event_pool_size_is_bounded(value: str, accepted: bool) -> None:
    env = {"NOVA_EVENTS_DB_POOL_SIZE": value}
    if accepted:
        config = Config.from_env(env, default_ports=REGISTRY.default_ports)
        assert config.events_db_pool_size == int(value)
    else:
        with pytest.raises(ConfigError, match="NOVA_EVENTS_DB_POOL_SIZE"):
            Config.from_env(env, default_ports=REGISTRY.default_ports)


def test_the_event_pool_defaults_to_twelve_beside_an_unchanged_rpc_pool() -> None:
    config = Config.from_env({}, default_ports=REGISTRY.default_ports)
    assert (config.events_db_pool_size, config.db_pool_size) == (16, 10)
    assert config.events_db_pool_size >= EVENT_POOL, "the default must fit every group"


async def test_an_event_pool_too_small_for_the_groups_is_refused_at_start(
    server_url: str, tmp_path: Path
) -> None:
    env = {f"NOVA_{name.upper()}_PORT": "0" for name in REGISTRY.services}
    env |= {
        "NOVA_DATA_DIR": str(tmp_path / "data"),
        **chdb_env(),
        "NOVA_AUTH_SECRET": "pool-secret-" + "x" * 40,
        "NOVA_EVENTS_DB_POOL_SIZE": str(EVENT_POOL - 1),
    }
    async with fresh_database(server_url, "eventpool") as url:
        config = Config.from_env(
            env | {"NOVA_DATABASE_URL": url}, default_ports=REGISTRY.default_ports
        )
        with pytest.raises(ConfigError, match=f"need at least {EVENT_POOL} connections"):
            async with running(config, REGISTRY, list(REGISTRY.services), None, events=True):
                pass
