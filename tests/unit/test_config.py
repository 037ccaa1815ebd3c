"""Config is read once from NOVA_* variables and names the variable when one is wrong."""

from pathlib import Path

import pytest

from services.registry import REGISTRY
from services.runtime.config import Config, ConfigError

PORTS = REGISTRY.default_ports


def test_defaults_need_no_variables_at_all() -> None:
    config = Config.from_env({}, default_ports=PORTS)
    assert config.database_url is None
    assert config.ports == PORTS
    assert config.addresses["user"] == "localhost:50051"
    assert config.data_dir == Path(".nova").absolute()
    assert config.password_hash_profile == "rfc9106-low-memory"


def test_client_addresses_follow_ports_and_can_be_overridden() -> None:
    config = Config.from_env(
        {"NOVA_USER_PORT": "6000", "NOVA_CONTENT_ADDRESS": "content.internal:443"},
        default_ports=PORTS,
    )
    assert config.addresses["user"] == "localhost:6000"
    assert config.addresses["content"] == "content.internal:443"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NOVA_USER_PORT": "http"}, "NOVA_USER_PORT must be a whole number from 0 to 65535"),
        ({"NOVA_CONTENT_PORT": "70000"}, "NOVA_CONTENT_PORT must be a whole number"),
        ({"NOVA_DB_POOL_SIZE": "0"}, "NOVA_DB_POOL_SIZE must be a whole number from 1"),
        ({"NOVA_AUTH_SECRET": "short"}, "NOVA_AUTH_SECRET must be at least 32 characters"),
        ({"NOVA_LOG_LEVEL": "loud"}, "NOVA_LOG_LEVEL must be one of DEBUG, INFO"),
        ({"NOVA_PASSWORD_HASH_PROFILE": "md5"}, "NOVA_PASSWORD_HASH_PROFILE must be one of"),
        ({"NOVA_EVENT_RETENTION_HOURS": "0"}, "NOVA_EVENT_RETENTION_HOURS must be a whole"),
        ({"NOVA_DRAIN_DELAY_SECONDS": "301"}, "NOVA_DRAIN_DELAY_SECONDS must be a whole number"),
    ],
)
def test_a_bad_value_fails_with_the_variable_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.from_env(env, default_ports=PORTS)


def test_event_retention_and_kafka_partitions_are_read() -> None:
    config = Config.from_env(
        {"NOVA_EVENT_RETENTION_HOURS": "2", "NOVA_KAFKA_PARTITIONS": "7"}, default_ports=PORTS
    )
    assert config.events.event_retention_seconds == 2 * 3600
    assert config.events.kafka_partitions == 7
    assert (
        Config.from_env({"NOVA_DRAIN_DELAY_SECONDS": "10"}, default_ports=PORTS).drain_delay_seconds
        == 10
    )
    default = Config.from_env({}, default_ports=PORTS).events
    assert (default.event_retention_seconds, default.kafka_partitions) == (7 * 86400, 3)


def test_only_registered_services_get_ports_and_addresses() -> None:
    config = Config.from_env({"NOVA_PROBE_PORT": "6100"}, default_ports={**PORTS, "probe": 50099})
    assert config.ports["probe"] == 6100
    assert config.addresses["probe"] == "localhost:6100"
    assert "probe" not in Config.from_env({}, default_ports=PORTS).ports


def test_replica_balancing_is_configured_and_checked() -> None:
    pool = Config.from_env(
        {
            "NOVA_CLIENT_RESOLVE_MS": "2000",
            "NOVA_CLIENT_EJECTION_MS": "500",
            "NOVA_CLIENT_EJECTION_MAX_MS": "4000",
            "NOVA_CLIENT_WATCH_HEALTH": "off",
        },
        default_ports=PORTS,
    ).clients.pool
    assert (pool.resolve_seconds, pool.watch_health) == (2, False)
    assert (pool.ejection.base_seconds, pool.ejection.max_seconds) == (0.5, 4)
    with pytest.raises(ConfigError, match=r"NOVA_CLIENT_EJECTION_MAX_MS .* at least"):
        Config.from_env(
            {"NOVA_CLIENT_EJECTION_MS": "5000", "NOVA_CLIENT_EJECTION_MAX_MS": "1000"},
            default_ports=PORTS,
        )
