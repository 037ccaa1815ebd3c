"""NOVA_EVENT_ABANDON_HOURS: when an idle consumer group stops holding the log's entries.
It defaults to 30 days, never below the retention, and a value shorter than the retention
stops the start naming both variables."""

import pytest

from services.runtime.config_sections import event_settings
from services.runtime.env import ConfigError, EnvReader
from services.runtime.events.settings import EventSettings


def _settings(env: dict[str, str]) -> EventSettings:
    return event_settings(EnvReader(env))


def test_the_default_is_thirty_days_or_the_retention_when_that_is_longer() -> None:
    assert _settings({}).event_abandon_seconds == 30 * 86400
    assert _settings({"NOVA_EVENT_RETENTION_HOURS": "2000"}).event_abandon_seconds == 2000 * 3600


def test_a_value_at_least_the_retention_is_read() -> None:
    settings = _settings({"NOVA_EVENT_RETENTION_HOURS": "24", "NOVA_EVENT_ABANDON_HOURS": "24"})
    assert (settings.event_retention_seconds, settings.event_abandon_seconds) == (86400, 86400)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NOVA_EVENT_ABANDON_HOURS": "0"}, "NOVA_EVENT_ABANDON_HOURS must be a whole number"),
        ({"NOVA_EVENT_ABANDON_HOURS": "soon"}, "NOVA_EVENT_ABANDON_HOURS must be a whole number"),
        (
            {"NOVA_EVENT_ABANDON_HOURS": "100"},
            r"NOVA_EVENT_ABANDON_HOURS \(100\) must be at least NOVA_EVENT_RETENTION_HOURS "
            r"\(168\)",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        _settings(env)
    assert "\n" not in str(raised.value)


def test_settings_built_in_code_refuse_an_abandon_period_below_the_retention() -> None:
    with pytest.raises(ValueError, match="event_abandon_seconds"):
        EventSettings(event_retention_seconds=7 * 86400, event_abandon_seconds=86400)
