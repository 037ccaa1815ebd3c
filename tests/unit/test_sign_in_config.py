"""The sign-in settings' variables: defaults, the ends of their ranges, and what a bad value
says."""

import ipaddress
import os

import pytest

from services.runtime.config import Config
from services.runtime.env import ConfigError
from services.runtime.rate_limit import Rate
from services.runtime.sign_in import SignInSettings


def sign_in(env: dict[str, str]) -> SignInSettings:
    return Config.from_env(env, default_ports={}).sign_in


def test_defaults_allow_people_and_stop_scripts() -> None:
    settings = sign_in({})
    assert settings.authenticate_per_login == Rate(per_minute=5, burst=10)
    assert settings.authenticate_per_address == Rate(per_minute=30, burst=30)
    assert settings.create_user_per_address == Rate(per_minute=5, burst=10)
    assert settings.rate_limit_keys == 100_000
    assert settings.trusted_proxies == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert settings.hash_concurrency == (os.cpu_count() or 1)
    assert settings.hash_queue == 2 * settings.hash_concurrency


def test_each_setting_is_read_up_to_its_bound() -> None:
    settings = sign_in(
        {
            "NOVA_AUTHENTICATE_LOGIN_PER_MINUTE": "1000000",
            "NOVA_AUTHENTICATE_LOGIN_BURST": "1",
            "NOVA_AUTHENTICATE_ADDRESS_PER_MINUTE": "1",
            "NOVA_CREATE_USER_ADDRESS_BURST": "1000000",
            "NOVA_RATE_LIMIT_KEYS": "10000000",
            "NOVA_TRUSTED_PROXIES": "none",
            "NOVA_PASSWORD_HASH_CONCURRENCY": "256",
            "NOVA_PASSWORD_HASH_QUEUE": "0",
        }
    )
    assert settings.authenticate_per_login == Rate(per_minute=1_000_000, burst=1)
    assert settings.authenticate_per_address.per_minute == 1
    assert settings.create_user_per_address.burst == 1_000_000
    assert settings.rate_limit_keys == 10_000_000
    assert settings.trusted_proxies == ()
    assert (settings.hash_concurrency, settings.hash_queue) == (256, 0)
    assert sign_in({"NOVA_PASSWORD_HASH_CONCURRENCY": "3"}).hash_queue == 6


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("NOVA_AUTHENTICATE_LOGIN_PER_MINUTE", "0", "from 1 to 1000000"),
        ("NOVA_CREATE_USER_ADDRESS_BURST", "1000001", "from 1 to 1000000"),
        ("NOVA_RATE_LIMIT_KEYS", "999", "from 1000 to 10000000"),
        ("NOVA_PASSWORD_HASH_CONCURRENCY", "257", "from 1 to 256"),
        ("NOVA_PASSWORD_HASH_QUEUE", "10001", "from 0 to 10000"),
        ("NOVA_TRUSTED_PROXIES", "10.0.0.0/33", "must be comma-separated addresses or CIDR"),
    ],
)
def test_a_value_out_of_range_names_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=variable) as error:
        sign_in({variable: value})
    assert message in str(error.value)
