"""How the NOVA_* variables of each component fill in that component's settings object.

Components (the server layers, the client stack) take frozen settings dataclasses
with their own defaults and know nothing about the environment; this module is the one
place that maps variables onto them, so `nova … --help`-style docs and the README's
configuration table have a single source to agree with.
"""

from interceptors.client.breaker import BreakerSettings
from interceptors.client.channel_pool import PoolSettings
from interceptors.client.hedging import HedgingSettings
from interceptors.client.propagation import PropagationSettings
from interceptors.client.replicas import EjectionSettings
from interceptors.client.retry import BudgetSettings, RetrySettings
from interceptors.client.stack import ClientSettings
from interceptors.client.tls import ChannelTls
from interceptors.server.backpressure import BackpressureSettings
from interceptors.server.deadlines import DeadlineSettings
from interceptors.server.streams import StreamSettings
from services.runtime.auth import MAX_PREVIOUS_SECRETS, MIN_KEY_LENGTH
from services.runtime.client_address import parse_networks
from services.runtime.env import ConfigError, EnvReader
from services.runtime.events.settings import SASL_MECHANISMS, EventSettings, KafkaAccess
from services.runtime.rate_limit import Rate
from services.runtime.server_layers import ServerLayers
from services.runtime.sign_in import SignInSettings, default_hash_concurrency


def _ejection(read: EnvReader) -> EjectionSettings:
    base = read.seconds_from_ms("NOVA_CLIENT_EJECTION_MS", 1000, 1, 600_000)
    longest = read.seconds_from_ms("NOVA_CLIENT_EJECTION_MAX_MS", 10_000, 1, 3_600_000)
    if longest < base:
        raise ConfigError(
            f"NOVA_CLIENT_EJECTION_MAX_MS ({longest * 1000:g}) must be at least "
            f"NOVA_CLIENT_EJECTION_MS ({base * 1000:g})"
        )
    return EjectionSettings(base_seconds=base, max_seconds=longest)


def client_settings(read: EnvReader, tls: ChannelTls | None = None) -> ClientSettings:
    """`tls`: the clients' part of services.runtime.tls.tls_settings."""
    return ClientSettings(
        pool=PoolSettings(
            channels=read.number("NOVA_CLIENT_CHANNELS", 4, 1, 64),
            max_age_seconds=read.number("NOVA_CLIENT_CHANNEL_MAX_AGE_SECONDS", 240, 1, 86400),
            drain_seconds=read.number("NOVA_CLIENT_DRAIN_SECONDS", 30, 0, 3600),
            resolve_seconds=read.seconds_from_ms("NOVA_CLIENT_RESOLVE_MS", 5000, 100, 3_600_000),
            ejection=_ejection(read),
            watch_health=read.flag("NOVA_CLIENT_WATCH_HEALTH", True),
        ),
        propagation=PropagationSettings(
            default_timeout_seconds=read.seconds_from_ms(
                "NOVA_CLIENT_DEFAULT_TIMEOUT_MS", 10_000, 1, 3_600_000
            )
        ),
        retry=RetrySettings(
            max_attempts=read.number("NOVA_CLIENT_RETRY_MAX_ATTEMPTS", 3, 1, 10),
            initial_backoff_seconds=read.seconds_from_ms(
                "NOVA_CLIENT_RETRY_INITIAL_BACKOFF_MS", 25, 1, 60_000
            ),
            max_backoff_seconds=read.seconds_from_ms(
                "NOVA_CLIENT_RETRY_MAX_BACKOFF_MS", 1000, 1, 600_000
            ),
        ),
        budget=BudgetSettings(
            ratio=read.number("NOVA_CLIENT_RETRY_BUDGET_PERCENT", 10, 0, 100) / 100,
            min_per_second=read.number("NOVA_CLIENT_RETRY_BUDGET_MIN_PER_SECOND", 1, 0, 10_000),
        ),
        hedging=HedgingSettings(
            enabled=read.flag("NOVA_CLIENT_HEDGING", False),
            percentile=read.number("NOVA_CLIENT_HEDGE_PERCENTILE", 95, 50, 99),
        ),
        breaker=BreakerSettings(
            failures=read.number("NOVA_CLIENT_BREAKER_FAILURES", 5, 1, 10_000),
            reset_seconds=read.seconds_from_ms("NOVA_CLIENT_BREAKER_RESET_MS", 5000, 1, 3_600_000),
            probes=read.number("NOVA_CLIENT_BREAKER_PROBES", 1, 1, 1000),
            probe_timeout_seconds=read.seconds_from_ms(
                "NOVA_CLIENT_BREAKER_PROBE_TIMEOUT_MS", 1000, 1, 600_000
            ),
        ),
        tls=tls,
    )


def server_layers(read: EnvReader) -> ServerLayers:
    limiter = read.choice("NOVA_CONCURRENCY_LIMITER", "fixed", ("fixed", "adaptive", "off"))
    backpressure = BackpressureSettings(
        limiter="adaptive" if limiter == "adaptive" else "fixed",
        max_in_flight=read.number("NOVA_MAX_IN_FLIGHT", 1000, 1, 1_000_000),
        method_limits=_method_limits(read.text("NOVA_METHOD_LIMITS", "")),
        retry_pushback_ms=read.number("NOVA_RETRY_PUSHBACK_MS", 100, 0, 600_000),
    )
    default_ms = read.number("NOVA_DEFAULT_DEADLINE_MS", 10_000, 1, 3_600_000)
    minimum_ms = read.number("NOVA_MIN_DEADLINE_MS", 5, 0, default_ms - 1)
    streams = _stream_settings(read)
    return ServerLayers(
        streams=streams,
        max_concurrent_streams=_max_concurrent_streams(read, streams),
        telemetry=read.flag("NOVA_TELEMETRY", True),
        access_log=read.flag("NOVA_ACCESS_LOG", True),
        deadlines=DeadlineSettings(
            default_seconds=default_ms / 1000, minimum_seconds=minimum_ms / 1000
        ),
        backpressure=None if limiter == "off" else backpressure,
    )


def _stream_settings(read: EnvReader) -> StreamSettings:
    per_connection = read.number("NOVA_MAX_STREAMS_PER_CONNECTION", 16, 1, 1000)
    return StreamSettings(
        max_per_connection=per_connection,
        max_per_server=read.number("NOVA_MAX_STREAMS", 1000, per_connection, 1_000_000),
        idle_seconds=read.number("NOVA_STREAM_IDLE_SECONDS", 300, 1, 86_400),
    )


def _max_concurrent_streams(read: EnvReader, streams: StreamSettings) -> int:
    """NOVA_GRPC_MAX_CONCURRENT_STREAMS, above the streams one connection may hold."""
    value = read.number("NOVA_GRPC_MAX_CONCURRENT_STREAMS", 1000, 2, 1_000_000)
    if value <= streams.max_per_connection:
        raise ConfigError(
            f"NOVA_GRPC_MAX_CONCURRENT_STREAMS ({value}) must exceed "
            f"NOVA_MAX_STREAMS_PER_CONNECTION ({streams.max_per_connection}): a connection "
            "holding all the streams it may would have no room left for unary calls"
        )
    return value


def event_settings(read: EnvReader) -> EventSettings:
    bootstrap = read.optional("NOVA_KAFKA_BOOTSTRAP")
    if bootstrap is not None and not all(
        host.rpartition(":")[2].isdigit() for host in bootstrap.split(",")
    ):
        raise ConfigError(f"NOVA_KAFKA_BOOTSTRAP must be host:port[,host:port…]; got {bootstrap!r}")
    replication = read.number("NOVA_KAFKA_REPLICATION_FACTOR", 3, 1, 100)
    retention_hours = read.number("NOVA_EVENT_RETENTION_HOURS", 168, 1, 100_000)
    return EventSettings(
        kafka_bootstrap=bootstrap,
        kafka_partitions=read.number("NOVA_KAFKA_PARTITIONS", 3, 1, 1000),
        kafka_replication_factor=replication,
        kafka_min_insync_replicas=read.number(
            "NOVA_KAFKA_MIN_INSYNC_REPLICAS", max(1, replication - 1), 1, replication
        ),
        kafka_idempotent=read.flag("NOVA_KAFKA_IDEMPOTENT", True),
        kafka_retention_seconds=read.number("NOVA_KAFKA_RETENTION_HOURS", 168, 1, 100_000) * 3600,
        kafka_access=_kafka_access(read),
        relay_batch_size=read.number("NOVA_RELAY_BATCH_SIZE", 500, 1, 100_000),
        relay_poll_seconds=read.seconds_from_ms("NOVA_RELAY_POLL_MS", 1000, 10, 600_000),
        outbox_retention_seconds=read.number("NOVA_OUTBOX_RETENTION_HOURS", 168, 0, 100_000) * 3600,
        event_retention_seconds=retention_hours * 3600,
        event_abandon_seconds=_abandon_hours(read, retention_hours) * 3600,
    )


def _abandon_hours(read: EnvReader, retention_hours: int) -> int:
    """NOVA_EVENT_ABANDON_HOURS, no shorter than the retention: a group that stopped while
    behind would otherwise lose entries younger than the retention promises to keep."""
    hours = read.number("NOVA_EVENT_ABANDON_HOURS", max(720, retention_hours), 1, 100_000)
    if hours < retention_hours:
        raise ConfigError(
            f"NOVA_EVENT_ABANDON_HOURS ({hours}) must be at least NOVA_EVENT_RETENTION_HOURS "
            f"({retention_hours}): a consumer group that stopped while behind would lose "
            "events the retention period promises to keep"
        )
    return hours


def _kafka_access(read: EnvReader) -> KafkaAccess:
    """TLS files must exist and a certificate needs its key; SASL needs a mechanism, a user
    and a password together, so a half-set pair fails at start, not at the first send."""
    files = {
        name: read.existing_file(f"NOVA_KAFKA_TLS_{name}_FILE") for name in ("CA", "CERT", "KEY")
    }
    if (files["CERT"] is None) != (files["KEY"] is None):
        raise ConfigError(
            "NOVA_KAFKA_TLS_CERT_FILE and NOVA_KAFKA_TLS_KEY_FILE go together: set both "
            "(mutual TLS) or neither"
        )
    mechanism = read.optional("NOVA_KAFKA_SASL_MECHANISM")
    if mechanism is not None:
        mechanism = read.choice("NOVA_KAFKA_SASL_MECHANISM", "", SASL_MECHANISMS, upper=True)
    username = read.optional("NOVA_KAFKA_SASL_USERNAME")
    password = read.optional("NOVA_KAFKA_SASL_PASSWORD")
    if mechanism is None and (username is not None or password is not None):
        raise ConfigError(
            "NOVA_KAFKA_SASL_USERNAME/_PASSWORD are set but NOVA_KAFKA_SASL_MECHANISM is not; "
            f"set it to one of {', '.join(SASL_MECHANISMS)}"
        )
    if mechanism is not None and (username is None or password is None):
        raise ConfigError(
            f"NOVA_KAFKA_SASL_MECHANISM={mechanism} needs both NOVA_KAFKA_SASL_USERNAME and "
            "NOVA_KAFKA_SASL_PASSWORD"
        )
    return KafkaAccess(
        tls_ca_file=None if files["CA"] is None else str(files["CA"]),
        tls_cert_file=None if files["CERT"] is None else str(files["CERT"]),
        tls_key_file=None if files["KEY"] is None else str(files["KEY"]),
        sasl_mechanism=mechanism,
        sasl_username=username,
        sasl_password=password,
    )


def metrics_port(read: EnvReader) -> int | None:
    """None (unset): no scrape endpoint; 0: any free port."""
    if not read.text("NOVA_METRICS_PORT", ""):
        return None
    return read.number("NOVA_METRICS_PORT", 0, 0, 65535)


def sign_in_settings(read: EnvReader) -> SignInSettings:
    cpus = default_hash_concurrency()
    concurrency = read.number("NOVA_PASSWORD_HASH_CONCURRENCY", cpus, 1, 256)
    return SignInSettings(
        authenticate_per_login=_rate(read, "NOVA_AUTHENTICATE_LOGIN", 5, 10),
        authenticate_per_address=_rate(read, "NOVA_AUTHENTICATE_ADDRESS", 30, 30),
        create_user_per_address=_rate(read, "NOVA_CREATE_USER_ADDRESS", 5, 10),
        rate_limit_keys=read.number("NOVA_RATE_LIMIT_KEYS", 100_000, 1000, 10_000_000),
        trusted_proxies=parse_networks(
            "NOVA_TRUSTED_PROXIES", read.text("NOVA_TRUSTED_PROXIES", "127.0.0.0/8,::1")
        ),
        hash_concurrency=concurrency,
        hash_queue=read.number("NOVA_PASSWORD_HASH_QUEUE", 2 * concurrency, 0, 10_000),
    )


def _rate(read: EnvReader, prefix: str, per_minute: int, burst: int) -> Rate:
    """<prefix>_PER_MINUTE and <prefix>_BURST."""
    return Rate(
        per_minute=read.number(f"{prefix}_PER_MINUTE", per_minute, 1, 1_000_000),
        burst=read.number(f"{prefix}_BURST", burst, 1, 1_000_000),
    )


def previous_secrets(read: EnvReader) -> tuple[str, ...]:
    """NOVA_AUTH_PREVIOUS_SECRETS: comma-separated keys, each as long as a signing key."""
    raw = read.text("NOVA_AUTH_PREVIOUS_SECRETS", "")
    keys = tuple(filter(None, (key.strip() for key in raw.split(","))))
    if len(keys) > MAX_PREVIOUS_SECRETS:
        raise ConfigError(
            f"NOVA_AUTH_PREVIOUS_SECRETS holds {len(keys)} keys; at most "
            f"{MAX_PREVIOUS_SECRETS} (drop those older than the token lifetime)"
        )
    for index, key in enumerate(keys):
        if len(key) < MIN_KEY_LENGTH:
            raise ConfigError(
                f"NOVA_AUTH_PREVIOUS_SECRETS key {index + 1} has {len(key)} characters, "
                f"fewer than {MIN_KEY_LENGTH}"
            )
    return keys


def auth_audience(read: EnvReader) -> str:
    audience = read.text("NOVA_AUTH_AUDIENCE", "nova")
    if len(audience) > 100 or not audience.isprintable():
        raise ConfigError(
            f"NOVA_AUTH_AUDIENCE must be at most 100 printable characters; got {audience[:40]!r}"
        )
    return audience


def _method_limits(raw: str) -> dict[str, int]:
    """ "/pkg.Service/Method=20,/pkg.Service/Other=5" -> {method: limit}."""
    limits = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        method, _, limit = item.partition("=")
        if not method.startswith("/") or method.count("/") != 2 or not limit.isdigit():
            raise ConfigError(
                "NOVA_METHOD_LIMITS must look like "
                f"'/nova.user.v1.UserService/BatchGetUsers=20,…'; got {item!r}"
            )
        limits[method] = int(limit)
    return limits
