"""Builds a process: config -> database -> migrations -> servers, closed in reverse."""

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import timedelta

from services.runtime.auth import MIN_KEY_LENGTH, TokenCodec, development_secret
from services.runtime.clickhouse import open_clickhouse
from services.runtime.clickhouse_migrations import migrate_clickhouse
from services.runtime.config import Config, ConfigError
from services.runtime.db import Database, open_database
from services.runtime.embedded_postgres import embedded_postgres
from services.runtime.embedded_redis import embedded_redis
from services.runtime.events import schema as events_schema
from services.runtime.events.outbox import migrate_outbox
from services.runtime.migrations import migrate
from services.runtime.redis_client import open_redis
from services.runtime.server import RunningServer, start_server
from services.runtime.spec import ConsumerSpec, Dependencies, ServiceSpec
from services.runtime.tenancy import registry as tenant_registry
from services.runtime.tenancy.directory import TenantDirectory

EVENTS_APPLICATION_NAME = "nova-events"
"""The event pool's connections' application_name, to tell them apart in pg_stat_activity."""


def signing_key(config: Config, *, development: bool) -> str:
    """NOVA_AUTH_SECRET; without it, in development (`nova up`) a key of the data folder's,
    and elsewhere (`nova serve`) an error: every process of a deployment must sign and
    verify with the same key, and one made on the spot would be no one else's."""
    if config.auth_secret is not None:
        return config.auth_secret
    if not development:
        raise ConfigError(
            f"NOVA_AUTH_SECRET is not set; it signs and verifies access tokens and must be "
            f"the same in every process (at least {MIN_KEY_LENGTH} characters, e.g. from "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`); only `nova up` "
            "makes a development key of its own"
        )
    return development_secret(config.data_dir)


@asynccontextmanager
async def database_url(config: Config) -> AsyncIterator[str]:
    """NOVA_DATABASE_URL, or else an embedded PostgreSQL's for as long as the block runs:
    the one DSN every pool of the process connects to."""
    if config.database_url is not None:
        yield config.database_url
    else:
        async with embedded_postgres(config.data_dir) as dsn:
            yield dsn


@asynccontextmanager
async def redis_url(config: Config) -> AsyncIterator[str]:
    """NOVA_REDIS_URL, or else an embedded Redis's (in the data folder) for as long as the
    block runs."""
    if config.redis.url is not None:
        yield config.redis.url
    else:
        async with embedded_redis(config.data_dir) as url:
            yield url


def open_event_database(config: Config, dsn: str) -> AbstractAsyncContextManager[Database]:
    """The event machinery's own pool (NOVA_EVENTS_DB_POOL_SIZE) for a process that also
    serves RPCs: the relay's LISTEN and each log subscription pin a connection for good,
    and a busy relay would otherwise take the connections RPCs wait for."""
    return open_database(
        dsn,
        size=config.events_db_pool_size,
        acquire_timeout_ms=config.db_acquire_timeout_ms,
        application_name=EVENTS_APPLICATION_NAME,
    )


@asynccontextmanager
async def open_dependencies(
    config: Config,
    *,
    development: bool = True,
    dsn: str | None = None,
    with_redis: bool = False,
    redis_address: str | None = None,
    with_clickhouse: bool = False,
) -> AsyncIterator[Dependencies]:
    """The database (`dsn`, else embedded unless NOVA_DATABASE_URL), the token codec (see
    signing_key: `development` allows a key of the data folder's) and, `with_redis`, a Redis
    client (on `redis_address`, else redis_url's). Without `with_redis` no Redis is started
    or dialled: commands that need none (`nova migrate`, `nova events …`) must not start
    one beside a running `nova up`. `with_clickhouse`: ClickHouse too (NOVA_CLICKHOUSE_URL's
    server, else chdb in the data folder, which one process at a time may open)."""
    secret = signing_key(config, development=development)
    async with AsyncExitStack() as stack:
        if dsn is None:
            dsn = await stack.enter_async_context(database_url(config))
        db = await stack.enter_async_context(
            # RPCs keep no session state on a connection; migrations, which take a session
            # lock, release it themselves (or drop the connection).
            open_database(
                dsn,
                size=config.db_pool_size,
                acquire_timeout_ms=config.db_acquire_timeout_ms,
                session_state=False,
            )
        )
        redis = None
        if with_redis:
            if redis_address is None:
                redis_address = await stack.enter_async_context(redis_url(config))
            redis = await stack.enter_async_context(open_redis(redis_address, config.redis))
        clickhouse = None
        if with_clickhouse:
            analytics = config.analytics
            clickhouse = await stack.enter_async_context(
                open_clickhouse(
                    analytics.clickhouse_url,
                    analytics.chdb_path or config.data_dir / "clickhouse",
                    analytics.database,
                )
            )
        tokens = TokenCodec(
            secret=secret,
            ttl=timedelta(seconds=config.token_ttl_seconds),
            previous_secrets=config.auth_previous_secrets,
            audience=config.auth_audience,
        )
        yield Dependencies(
            config=config,
            db=db,
            tokens=tokens,
            redis=redis,
            clickhouse=clickhouse,
            tenants=TenantDirectory(db),
        )


async def migrate_services(
    db: Database, specs: Iterable[ServiceSpec], consumers: Iterable[ConsumerSpec] = ()
) -> dict[str, list[str]]:
    """Applies pending migrations of the tenant registry ("tenants"), of the event
    machinery ("events"), of each consumer
    group's schema and of each service (its own, then its outbox's when it declares
    aggregate types); returns what was applied, by name."""
    applied = {}
    async with db.connection() as conn:
        applied["tenants"] = await migrate(
            conn, schema=tenant_registry.SCHEMA, directory=tenant_registry.MIGRATIONS
        )
        applied["events"] = await migrate(
            conn, schema=events_schema.SCHEMA, directory=events_schema.MIGRATIONS
        )
        specs = list(specs)
        schemas = {spec.schema for spec in specs}
        for consumer in consumers:
            if consumer.schema in schemas:
                continue  # a service's own group: migrated with the service, below
            applied[consumer.group] = await migrate(
                conn, schema=consumer.schema, directory=consumer.migrations
            )
        for spec in specs:
            if spec.schema == tenant_registry.SCHEMA:
                applied[spec.name] = []  # the runtime's, migrated first
                continue
            done = await migrate(conn, schema=spec.schema, directory=spec.migrations)
            if spec.aggregate_types:
                done += [f"outbox/{name}" for name in await migrate_outbox(conn, spec.schema)]
            applied[spec.name] = done
    return applied


@asynccontextmanager
async def serve(
    deps: Dependencies, specs: Iterable[ServiceSpec], *, ports: dict[str, int] | None = None
) -> AsyncIterator[list[RunningServer]]:
    """Runs one server per service (its ClickHouse schema migrated first, if it has one).
    On exit all of them drain together: health turns
    NOT_SERVING at once while they still serve, for the drain delay, then they stop
    taking calls and those in flight get the grace period."""
    ports = ports if ports is not None else dict(deps.config.ports)
    specs = list(specs)
    for spec in specs:
        if spec.clickhouse_migrations is not None and deps.clickhouse is not None:
            await migrate_clickhouse(deps.clickhouse, spec.clickhouse_migrations)
    servers: list[RunningServer] = []
    try:
        for spec in specs:
            servers.append(
                await start_server(
                    spec,
                    deps,
                    host=deps.config.bind_host,
                    port=ports[spec.name],
                    layers=deps.config.server,
                    tls=deps.config.tls,
                )
            )
        yield servers
    finally:
        await _drain(servers, deps.config.drain_delay_seconds, deps.config.shutdown_grace_seconds)


async def _drain(servers: Sequence[RunningServer], delay: float, grace: float) -> None:
    await asyncio.gather(*(server.drain() for server in servers))
    if servers and delay > 0:
        await asyncio.sleep(delay)
    await asyncio.gather(*(server.stop(grace) for server in servers))
