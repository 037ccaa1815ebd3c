"""Shared fixtures: a real PostgreSQL database, every service on port 0, and signed-in users.

NOVA_TEST_DATABASE_URL names a server to use (CI points it at the machine's PostgreSQL);
without it an embedded one (pgserver) starts in a temporary folder. Either way the session
gets a fresh database of its own, dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import grpc
import hypothesis
import pytest
from grpc import aio

from gateway.clients import Target
from nova.user.v1 import user_pb2, user_pb2_grpc
from services.cli.gateway import gateway_targets
from services.feed.fanout import GROUP as FEED_GROUP
from services.registry import REGISTRY
from services.runtime.auth import Caller, TokenCodec
from services.runtime.clickhouse_migrations import migrate_clickhouse
from services.runtime.config import Config
from services.runtime.db import Database
from services.runtime.events.workers import consumer_worker, relay_worker, running_events
from services.runtime.process import migrate_services, open_dependencies, serve
from services.runtime.spec import Dependencies
from services.runtime.tenancy import registry as tenant_registry

# Examples are checked for what they do, not for how fast: on a shared 2-core machine one
# can take longer than hypothesis's 200 ms default without anything being wrong (speed is
# measured in tests/bench).
hypothesis.settings.register_profile("nova", deadline=None)
hypothesis.settings.load_profile("nova")

if TYPE_CHECKING:
    from nova.user.v1.user_pb2_grpc import UserServiceAsyncStub


CHDB_PATH = Path(tempfile.mkdtemp(prefix="nova-tests-chdb-"))
"""The test process's one chdb path (chdb opens one path a process): every configuration
a test builds for in-process servers points here (chdb_env), each with a ClickHouse
database of its own."""


def chdb_env() -> dict[str, str]:
    """NOVA_CHDB_PATH and a fresh NOVA_CLICKHOUSE_DATABASE, for a test's own Config."""
    return {
        "NOVA_CHDB_PATH": str(CHDB_PATH),
        "NOVA_CLICKHOUSE_DATABASE": f"test_{uuid.uuid4().hex[:10]}",
    }


@pytest.fixture(scope="session", autouse=True)
def _chdb_folder() -> Iterator[None]:
    yield
    shutil.rmtree(CHDB_PATH, ignore_errors=True)


@pytest.fixture(scope="session")
def tmp_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nova-data")


@pytest.fixture(scope="session")
async def server_url() -> AsyncIterator[str]:
    """A PostgreSQL server's URL (its maintenance database)."""
    configured = os.environ.get("NOVA_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    from services.runtime.embedded_postgres import embedded_postgres

    # Not under pytest's temporary folder: run as root, pgserver serves from a user of its
    # own and opens the folders above the data for it, and any pytest run that starts
    # meanwhile closes pytest's folder to its owner again (its fix for shared /tmp).
    with tempfile.TemporaryDirectory(prefix="nova-test-pg-") as data:
        async with embedded_postgres(Path(data)) as url:
            yield url


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """A fresh database for this test session."""
    name = f"nova_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    yield _with_database(server_url, name)
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@asynccontextmanager
async def fresh_database(server_url: str, prefix: str) -> AsyncIterator[str]:
    """A new empty database on the server (named prefix_<random>), dropped afterwards:
    for tests that count every row, or run `nova` subprocesses against a database."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield _with_database(server_url, name)
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


def _with_database(url: str, name: str) -> str:
    """Points a postgresql:// URL (host or socket form) at another database."""
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    authority, _, _ = rest.partition("/")
    return f"{scheme}://{authority}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def config(database_url: str, tmp_data_dir: Path) -> Config:
    return Config.from_env(
        {
            "NOVA_DATABASE_URL": database_url,
            "NOVA_DATA_DIR": str(tmp_data_dir),
            "NOVA_BIND_HOST": "127.0.0.1",
            "NOVA_AUTH_SECRET": "test-secret-" + "x" * 40,
            "NOVA_PASSWORD_HASH_PROFILE": "insecure-fast",
            # The session's tests sign in and up far faster (and more at once) than people
            # do; the limits' own tests start servers with limits of their own.
            "NOVA_PASSWORD_HASH_QUEUE": "10000",
            **{
                f"NOVA_{limit}_{part}": "1000000"
                for limit in ("AUTHENTICATE_LOGIN", "AUTHENTICATE_ADDRESS", "CREATE_USER_ADDRESS")
                for part in ("PER_MINUTE", "BURST")
            },
            "NOVA_SHUTDOWN_GRACE_SECONDS": "0",
            "NOVA_ANALYTICS_IMPRESSION_CALLS_PER_MINUTE": "1000000",
            "NOVA_ANALYTICS_IMPRESSION_CALLS_BURST": "1000000",
            **chdb_env(),
        },
        default_ports=REGISTRY.default_ports,
    )


@pytest.fixture(scope="session")
async def deps(config: Config, redis_url: str) -> AsyncIterator[Dependencies]:
    """The services' dependencies, Redis (the feed's timelines) and ClickHouse (chdb in the
    session's data folder: the one chdb engine this process may open) included."""
    async with open_dependencies(
        config, with_redis=True, redis_address=redis_url, with_clickhouse=True
    ) as deps:
        await migrate_services(deps.db, REGISTRY.services.values())
        # What serve() does before the analytics server starts, for tests that read
        # ClickHouse without one.
        assert deps.clickhouse is not None
        for spec in REGISTRY.services.values():
            if spec.clickhouse_migrations is not None:
                await migrate_clickhouse(deps.clickhouse, spec.clickhouse_migrations)
        yield deps


@pytest.fixture(scope="session")
async def feed_events(deps: Dependencies) -> AsyncIterator[EventsSettled]:
    """The relay and the feed's consumer group, running for the rest of the session on the
    session's database and Redis: what fills the home timelines. Returns a function that
    waits until everything written so far has reached the feed."""
    workers = {
        "relay": relay_worker(REGISTRY.outbox_schemas, deps.config.events),
        FEED_GROUP: consumer_worker(
            REGISTRY.consumers[FEED_GROUP], REGISTRY.topics, deps.config, deps.redis
        ),
    }
    async with running_events(deps.db, deps.config.events, workers):
        yield lambda: events_settled(deps.db, FEED_GROUP)


EventsSettled = Callable[[], Awaitable[None]]


async def events_settled(db: Database, group: str, timeout_seconds: float = 20.0) -> None:
    """Waits until every outbox is relayed and `group` has committed past every event in
    the log; raises after `timeout_seconds`."""
    for _ in range(int(timeout_seconds / 0.02)):
        async with db.connection() as conn:
            unsent = 0
            for schema in REGISTRY.outbox_schemas:
                unsent += await conn.fetchval(
                    f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL"
                )
            behind = await conn.fetchval(
                """SELECT count(*) FROM (
                       SELECT topic, max(seq) AS last FROM nova_events.log
                        WHERE topic = ANY($2::text[]) GROUP BY topic) AS l
                   LEFT JOIN nova_events.offsets o
                          ON o.group_name = $1 AND o.topic = l.topic
                   WHERE coalesce(o.seq, 0) < l.last""",
                group,
                list(REGISTRY.topics),
            )
        if unsent == 0 and behind == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"events did not reach group {group!r} in {timeout_seconds} s")


@pytest.fixture(scope="session")
async def addresses(deps: Dependencies) -> AsyncIterator[dict[str, str]]:
    """Every service, started on a free port: name -> "127.0.0.1:port"."""
    ports = dict.fromkeys(REGISTRY.services, 0)
    async with serve(deps, REGISTRY.services.values(), ports=ports) as servers:
        yield {running.spec.name: f"127.0.0.1:{running.port}" for running in servers}


@pytest.fixture(scope="session")
def targets(addresses: dict[str, str]) -> dict[str, Target]:
    """Every service, as the gateway's client targets (as `nova up` hands them over)."""
    return gateway_targets(REGISTRY, addresses)


@pytest.fixture(scope="session")
async def channels(addresses: dict[str, str]) -> AsyncIterator[dict[str, aio.Channel]]:
    opened = {name: aio.insecure_channel(address) for name, address in addresses.items()}
    yield opened
    for channel in opened.values():
        await channel.close(None)


@pytest.fixture(scope="session")
def users(channels: dict[str, aio.Channel]) -> UserServiceAsyncStub:
    return user_pb2_grpc.UserServiceStub(channels["user"])


@dataclass(frozen=True)
class SignedIn:
    user: user_pb2.User
    token: str
    password: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


SignUp = Callable[..., Awaitable[SignedIn]]


NewTenant = Callable[..., Awaitable[uuid.UUID]]


@pytest.fixture(scope="session")
def new_tenant(deps: Dependencies) -> NewTenant:
    """Creates a tenant with a unique slug in the registry: ``tenant_id = await new_tenant()``."""

    async def create(prefix: str = "t") -> uuid.UUID:
        async with deps.db.transaction() as conn:
            return (await tenant_registry.create(conn, f"{prefix}-{uuid.uuid4().hex[:12]}")).id

    return create


def in_tenant(tokens: TokenCodec, who: SignedIn, tenant_id: uuid.UUID) -> SignedIn:
    """`who` signed in to another tenant (one of new_tenant's): for tests that rank or count
    everything of a tenant (trending, active users), which the session's other tests would
    crowd."""
    caller = Caller(user_id=uuid.UUID(who.user.id), tenant_id=tenant_id, handle=who.user.handle)
    token, _ = tokens.issue(caller)
    return replace(who, token=token)


@pytest.fixture(scope="session")
def sign_up(users: UserServiceAsyncStub) -> SignUp:
    """Creates a user with a unique handle and signs them in: ``alice = await sign_up()``."""

    async def create(prefix: str = "u", **fields: str) -> SignedIn:
        handle = f"{prefix}_{uuid.uuid4().hex[:10]}"
        password = "correct horse battery"
        created = await users.CreateUser(
            user_pb2.CreateUserRequest(
                handle=handle, email=f"{handle}@example.com", password=password, **fields
            )
        )
        auth = await users.Authenticate(
            user_pb2.AuthenticateRequest(login=handle, password=password)
        )
        return SignedIn(user=created.user, token=auth.access_token, password=password)

    return create


def status_of(error: pytest.ExceptionInfo[aio.AioRpcError]) -> tuple[grpc.StatusCode, str]:
    return error.value.code(), error.value.details() or ""


@pytest.fixture(scope="session", autouse=True)
def _no_proxy() -> Iterator[None]:
    # gRPC honours http_proxy; tests only ever talk to 127.0.0.1.
    saved = {
        k: os.environ.pop(k) for k in ("http_proxy", "https_proxy", "grpc_proxy") if k in os.environ
    }
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
async def kafka_bootstrap() -> AsyncIterator[str]:
    """A Kafka-protocol broker's bootstrap address: NOVA_TEST_KAFKA_BOOTSTRAP if set,
    else a Tansu broker (tests/brokers.py) started for the session."""
    configured = os.environ.get("NOVA_TEST_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    from tests.brokers import tansu_broker

    async with tansu_broker() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
async def redis_url() -> AsyncIterator[str]:
    """A Redis URL: NOVA_TEST_REDIS_URL if set (CI), else a redis-server started for the
    session; without either the test fails, saying how to provide one."""
    configured = os.environ.get("NOVA_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    from tests.brokers import redis_server

    async with redis_server() as url:
        yield url
