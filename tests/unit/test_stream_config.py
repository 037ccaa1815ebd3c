"""The stream limits are read from NOVA_* variables within their ranges, and a value that
would leave a connection no room for unary calls stops the start naming the variables."""

from __future__ import annotations

import pytest

from interceptors.server.streams import StreamSettings
from services.registry import REGISTRY
from services.runtime.config import Config, ConfigError
from services.runtime.server import server_options
from services.runtime.server_layers import ServerLayers


def layers(env: dict[str, str]) -> ServerLayers:
    return Config.from_env(env, default_ports=REGISTRY.default_ports).server


def test_streams_are_bounded_by_default() -> None:
    server = layers({})
    assert server.streams == StreamSettings(
        max_per_connection=16, max_per_server=1000, idle_seconds=300
    )
    assert server.max_concurrent_streams == 1000


def test_every_stream_limit_is_accepted_at_its_upper_end() -> None:
    server = layers(
        {
            "NOVA_MAX_STREAMS_PER_CONNECTION": "1000",
            "NOVA_MAX_STREAMS": "1000000",
            "NOVA_STREAM_IDLE_SECONDS": "86400",
            "NOVA_GRPC_MAX_CONCURRENT_STREAMS": "1000000",
        }
    )
    assert server.streams == StreamSettings(
        max_per_connection=1000, max_per_server=1_000_000, idle_seconds=86_400
    )
    assert ("grpc.max_concurrent_streams", 1_000_000) in server_options(server)


def test_the_lowest_limits_are_accepted() -> None:
    server = layers(
        {
            "NOVA_MAX_STREAMS_PER_CONNECTION": "1",
            "NOVA_MAX_STREAMS": "1",
            "NOVA_STREAM_IDLE_SECONDS": "1",
            "NOVA_GRPC_MAX_CONCURRENT_STREAMS": "2",
        }
    )
    assert server.streams == StreamSettings(max_per_connection=1, max_per_server=1, idle_seconds=1)
    assert server.max_concurrent_streams == 2


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"NOVA_MAX_STREAMS_PER_CONNECTION": "1001"},
            "NOVA_MAX_STREAMS_PER_CONNECTION must be a whole number from 1 to 1000; got '1001'",
        ),
        ({"NOVA_MAX_STREAMS_PER_CONNECTION": "0"}, "NOVA_MAX_STREAMS_PER_CONNECTION must be"),
        (
            {"NOVA_MAX_STREAMS": "15"},
            "NOVA_MAX_STREAMS must be a whole number from 16 to 1000000; got '15'",
        ),
        ({"NOVA_MAX_STREAMS": "1000001"}, "NOVA_MAX_STREAMS must be a whole number"),
        ({"NOVA_STREAM_IDLE_SECONDS": "0"}, "NOVA_STREAM_IDLE_SECONDS must be a whole number"),
        (
            {"NOVA_STREAM_IDLE_SECONDS": "86401"},
            "NOVA_STREAM_IDLE_SECONDS must be a whole number from 1 to 86400",
        ),
        (
            {"NOVA_GRPC_MAX_CONCURRENT_STREAMS": "1000001"},
            "NOVA_GRPC_MAX_CONCURRENT_STREAMS must be a whole number from 2 to 1000000",
        ),
        (
            {"NOVA_GRPC_MAX_CONCURRENT_STREAMS": "16"},
            r"NOVA_GRPC_MAX_CONCURRENT_STREAMS \(16\) must exceed "
            r"NOVA_MAX_STREAMS_PER_CONNECTION \(16\)",
        ),
        (
            {"NOVA_MAX_STREAMS_PER_CONNECTION": "1000"},
            r"NOVA_GRPC_MAX_CONCURRENT_STREAMS \(1000\) must exceed "
            r"NOVA_MAX_STREAMS_PER_CONNECTION \(1000\)",
        ),
    ],
)
def test_a_stream_limit_out_of_range_names_its_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        layers(env)


def test_settings_built_in_code_are_checked_too() -> None:
    with pytest.raises(ValueError, match="max_per_connection <= max_per_server"):
        StreamSettings(max_per_connection=5, max_per_server=4)
    with pytest.raises(ValueError, match="idle_seconds > 0"):
        StreamSettings(idle_seconds=0)
    with pytest.raises(ValueError, match=r"max_concurrent_streams \(16\) must exceed"):
        ServerLayers(max_concurrent_streams=16)
    assert ServerLayers(streams=None, max_concurrent_streams=1).max_concurrent_streams == 1
