"""Config is read once from NOVA_* variables and names the variable when one is wrong."""

from pathlib import Path

import pytest

from services.runtime.config import DEFAULT_PORTS, Config, ConfigError


def test_defaults_need_no_variables_at_all() -> None:
    config = Config.from_env({})
    assert config.database_url is None
    assert config.ports == DEFAULT_PORTS
    assert config.addresses["user"] == "localhost:50051"
    assert config.data_dir == Path(".nova").absolute()
    assert config.password_hash_profile == "rfc9106-low-memory"


def test_client_addresses_follow_ports_and_can_be_overridden() -> None:
    config = Config.from_env(
        {"NOVA_USER_PORT": "6000", "NOVA_CONTENT_ADDRESS": "content.internal:443"}
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
    ],
)
def test_a_bad_value_fails_with_the_variable_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.from_env(env)
