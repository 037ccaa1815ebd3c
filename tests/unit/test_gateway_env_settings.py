"""The gateway's NOVA_GATEWAY_* settings: the environment's defaults are the settings'
own, and each new one is read within its bounds, a bad value naming its variable."""

from dataclasses import fields

import pytest

from gateway.settings import GatewaySettings
from services.cli.gateway import gateway_settings
from services.runtime.env import ConfigError, EnvReader

NEW = {
    "NOVA_GATEWAY_MAX_QUERY_LENGTH": ("max_query_length", 1_000_000),
    "NOVA_GATEWAY_MAX_OPERATIONS": ("max_operations", 1000),
    "NOVA_GATEWAY_MAX_FRAGMENTS": ("max_fragments", 10_000),
    "NOVA_GATEWAY_MAX_VARIABLES_DEPTH": ("max_variables_depth", 100),
    "NOVA_GATEWAY_MAX_VARIABLE_VALUES": ("max_variable_values", 1_000_000),
    "NOVA_GATEWAY_DOCUMENT_CACHE_BYTES": ("document_cache_bytes", 2**34),
    "NOVA_GATEWAY_APQ_CACHE_BYTES": ("persisted_query_cache_bytes", 2**34),
    "NOVA_GATEWAY_APQ_REGISTRATIONS_PER_SECOND": (
        "persisted_query_registrations_per_second",
        100_000,
    ),
    "NOVA_GATEWAY_APQ_REGISTRATION_BURST": ("persisted_query_registration_burst", 1_000_000),
}
ADMISSION = {
    "NOVA_GATEWAY_MAX_IN_FLIGHT": ("max_in_flight", 100_000, 100_000),
    "NOVA_GATEWAY_MAX_QUEUED": ("max_queued", 1_000_000, 1_000_000),
    "NOVA_GATEWAY_QUEUE_TIMEOUT_MS": ("queue_timeout_seconds", 60_000, 60.0),
}


def test_the_environments_defaults_are_the_settings_defaults() -> None:
    read = gateway_settings(EnvReader({}), mode="development")
    default = GatewaySettings()
    for field in fields(GatewaySettings):
        if field.name != "production":
            assert getattr(read, field.name) == getattr(default, field.name), field.name


@pytest.mark.parametrize("variable", NEW)
def test_each_new_setting_is_read_up_to_its_maximum_and_refused_past_it(variable: str) -> None:
    name, maximum = NEW[variable]
    read = gateway_settings(EnvReader({variable: str(maximum)}), mode="development")
    assert getattr(read, name) == maximum
    with pytest.raises(ConfigError, match=variable):
        gateway_settings(EnvReader({variable: str(maximum + 1)}), mode="development")


@pytest.mark.parametrize(
    "name",
    ["persisted_query_registrations_per_second", "persisted_query_registration_burst"],
)
def test_a_registration_rate_below_one_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must be at least 1"):
        GatewaySettings(**{name: 0})  # type: ignore[arg-type]


@pytest.mark.parametrize("variable", ADMISSION)
def test_the_admission_settings_are_read_up_to_their_maximum(variable: str) -> None:
    name, maximum, value = ADMISSION[variable]
    read = gateway_settings(EnvReader({variable: str(maximum)}), mode="development")
    assert getattr(read.admission, name) == value
    with pytest.raises(ConfigError, match=variable):
        gateway_settings(EnvReader({variable: str(maximum + 1)}), mode="development")
