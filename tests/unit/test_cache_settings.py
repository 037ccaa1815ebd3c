"""NOVA_CACHE_* are read with the rest of the configuration: defaults, bounds, and a bad
value stops the start naming the variable."""

import pytest

from services.registry import REGISTRY
from services.runtime.cache_settings import CacheSettings
from services.runtime.config import Config, ConfigError


def _cache(env: dict[str, str]) -> CacheSettings:
    return Config.from_env(env, default_ports=REGISTRY.default_ports).cache


def test_the_cache_is_on_for_24_hours_with_a_minute_for_missing_ids_by_default() -> None:
    assert _cache({}) == CacheSettings(
        enabled=True, ttl_seconds=86_400, negative_ttl_seconds=60, timeout_seconds=0.1
    )


def test_every_cache_setting_can_be_changed() -> None:
    settings = _cache(
        {
            "NOVA_CACHE": "off",
            "NOVA_CACHE_TTL_HOURS": "2",
            "NOVA_CACHE_NEGATIVE_TTL_SECONDS": "5",
            "NOVA_CACHE_TIMEOUT_MS": "250",
        }
    )
    assert settings == CacheSettings(
        enabled=False, ttl_seconds=7200, negative_ttl_seconds=5, timeout_seconds=0.25
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NOVA_CACHE", "maybe"),
        ("NOVA_CACHE_TTL_HOURS", "0"),
        ("NOVA_CACHE_TTL_HOURS", "721"),
        ("NOVA_CACHE_NEGATIVE_TTL_SECONDS", "0"),
        ("NOVA_CACHE_TIMEOUT_MS", "ten"),
    ],
)
def test_a_bad_cache_setting_stops_the_start_naming_it(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        _cache({name: value})
