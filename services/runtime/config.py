"""Configuration: read once from NOVA_* environment variables into one typed object.

Every value is checked at start; a bad one stops the process with a message naming the
variable, what it holds and what it should hold.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio.connection import parse_url

from interceptors.client.stack import ClientSettings
from interceptors.client.targets import parse_target
from services.runtime.analytics_settings import AnalyticsSettings, analytics_settings
from services.runtime.cache_settings import CacheSettings, cache_settings
from services.runtime.config_sections import (
    auth_audience,
    client_settings,
    event_settings,
    metrics_port,
    previous_secrets,
    server_layers,
    sign_in_settings,
)
from services.runtime.env import ConfigError as ConfigError
from services.runtime.env import EnvReader
from services.runtime.events.settings import EventSettings
from services.runtime.feed_settings import FeedSettings, feed_settings
from services.runtime.redis_client import RedisSettings
from services.runtime.server_layers import ServerLayers
from services.runtime.sign_in import SignInSettings
from services.runtime.tls import ServerTls, tls_settings

PASSWORD_HASH_PROFILES = ("rfc9106-low-memory", "insecure-fast")


@dataclass(frozen=True)
class Config:
    database_url: str | None
    """None means: start an embedded PostgreSQL in data_dir."""
    data_dir: Path
    bind_host: str
    ports: Mapping[str, int]
    addresses: Mapping[str, str]
    """Where clients (gateway, seed, bench, other services) reach each service: one
    address or several, comma-separated, each host:port or dns:///name:port
    (interceptors.client.targets); checked here, parsed by the client's pool."""
    auth_secret: str | None
    """None means: use (or create) a development key in data_dir."""
    token_ttl_seconds: int
    auth_previous_secrets: tuple[str, ...]
    """Keys that verify tokens but sign none (NOVA_AUTH_PREVIOUS_SECRETS): key rotation."""
    auth_audience: str
    password_hash_profile: str
    sign_in: SignInSettings
    """Rate limits of log-in and sign-up, trusted proxies, the password hashing pool."""
    db_pool_size: int
    db_acquire_timeout_ms: int
    events_db_pool_size: int
    """Connections of the event machinery's own pool (relay, its LISTEN, log subscriptions,
    consumers) when `nova up` runs it beside the services: a busy relay cannot starve RPCs."""
    shutdown_grace_seconds: float
    drain_delay_seconds: float
    """How long servers answer health NOT_SERVING, still serving, before they stop taking
    calls: the time balancers need to see it and move away."""
    log_level: str
    clients: ClientSettings
    """How services, seed and bench call services: pool, retries, breaker, hedging."""
    server: ServerLayers
    """Which server interceptors run, and their limits."""
    metrics_port: int | None
    """Prometheus scrape endpoint; None: none, 0: any free port."""
    events: EventSettings
    """Transport (Kafka or the PostgreSQL log), relay and outbox retention."""
    tls: ServerTls | None
    """The servers' TLS (NOVA_TLS_CERT_FILE…); None: plaintext. The clients' is clients.tls."""
    redis: RedisSettings
    """NOVA_REDIS_URL (None: an embedded Redis in data_dir), the pool and its timeouts."""
    feed: FeedSettings
    """The home feed's timelines: cap, fan-out window, big authors (NOVA_FEED_*)."""
    cache: CacheSettings
    """The read caches in Redis: on or off, TTLs, how long Redis may take (NOVA_CACHE_*)."""
    analytics: AnalyticsSettings
    """ClickHouse (NOVA_CLICKHOUSE_URL, else chdb), the insert batcher, merged reads."""

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, default_ports: Mapping[str, int]
    ) -> "Config":
        """Reads the configuration of a build whose services listen on `default_ports` by
        name (the registry's: ``Config.from_env(env, default_ports=REGISTRY.default_ports)``);
        NOVA_<NAME>_PORT and NOVA_<NAME>_ADDRESS are read for each of them."""
        env = os.environ if env is None else env
        read = EnvReader(env)
        tls = tls_settings(read)
        host = read.text("NOVA_BIND_HOST", "localhost")
        ports = {
            name: read.number(f"NOVA_{name.upper()}_PORT", default, 0, 65535)
            for name, default in default_ports.items()
        }
        addresses = {
            name: _target(
                read, f"NOVA_{name.upper()}_ADDRESS", f"{_client_host(host)}:{ports[name]}"
            )
            for name in default_ports
        }
        return cls(
            database_url=read.optional("NOVA_DATABASE_URL"),
            data_dir=Path(read.text("NOVA_DATA_DIR", ".nova")).absolute(),
            bind_host=host,
            ports=ports,
            addresses=addresses,
            auth_secret=read.optional("NOVA_AUTH_SECRET", minimum_length=32),
            token_ttl_seconds=read.number("NOVA_TOKEN_TTL_SECONDS", 3600, 60, 30 * 86400),
            auth_previous_secrets=previous_secrets(read),
            auth_audience=auth_audience(read),
            password_hash_profile=read.choice(
                "NOVA_PASSWORD_HASH_PROFILE", PASSWORD_HASH_PROFILES[0], PASSWORD_HASH_PROFILES
            ),
            sign_in=sign_in_settings(read),
            db_pool_size=read.number("NOVA_DB_POOL_SIZE", 10, 1, 1000),
            db_acquire_timeout_ms=read.number("NOVA_DB_ACQUIRE_TIMEOUT_MS", 1000, 1, 60_000),
            events_db_pool_size=read.number("NOVA_EVENTS_DB_POOL_SIZE", 16, 3, 100),
            shutdown_grace_seconds=read.number("NOVA_SHUTDOWN_GRACE_SECONDS", 5, 0, 300),
            drain_delay_seconds=read.number("NOVA_DRAIN_DELAY_SECONDS", 0, 0, 300),
            log_level=read.choice(
                "NOVA_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"), upper=True
            ),
            clients=client_settings(read, tls.client),
            server=server_layers(read),
            metrics_port=metrics_port(read),
            events=event_settings(read),
            tls=tls.server,
            redis=_redis_settings(read),
            feed=feed_settings(read),
            cache=cache_settings(read),
            analytics=analytics_settings(read),
        )


def _target(read: EnvReader, name: str, default: str) -> str:
    text = read.text(name, default)
    try:
        parse_target(text)
    except ValueError as error:
        raise ConfigError(f"{name} {error}") from None
    return text


def _redis_settings(read: EnvReader) -> RedisSettings:
    url = read.optional("NOVA_REDIS_URL")
    if url is not None:
        try:
            parse_url(url)
        except ValueError as error:
            # Shown without the value: a Redis URL may hold a password.
            raise ConfigError(
                f"NOVA_REDIS_URL: {error} (e.g. redis://127.0.0.1:6379/0 or "
                "unix:///run/redis.sock?db=0; unset, an embedded Redis starts in NOVA_DATA_DIR)"
            ) from None
    return RedisSettings(
        url=url,
        pool_size=read.number("NOVA_REDIS_POOL_SIZE", 16, 1, 1000),
        timeout_seconds=read.seconds_from_ms("NOVA_REDIS_TIMEOUT_MS", 1000, 1, 60_000),
    )


def _client_host(bind_host: str) -> str:
    return "localhost" if bind_host in ("0.0.0.0", "[::]", "::", "") else bind_host
