"""Targets: one address or several, host:port or dns:///name:port, and the errors a person
gets for anything else (from NOVA_<NAME>_ADDRESS, naming the variable)."""

import pytest

from interceptors.client.targets import Endpoint, parse_target, resolve
from services.registry import REGISTRY
from services.runtime.config import Config, ConfigError


@pytest.mark.parametrize(
    ("text", "entries"),
    [
        ("localhost:50051", ("localhost:50051",)),
        ("10.0.0.7:50051, 10.0.0.8:50051", ("10.0.0.7:50051", "10.0.0.8:50051")),
        ("dns:///nova-user.nova.svc:50051", ("dns:///nova-user.nova.svc:50051",)),
        ("[::1]:50051,unix:/run/nova/user.sock", ("[::1]:50051", "unix:/run/nova/user.sock")),
        ("user-0:1,dns:///user:2", ("user-0:1", "dns:///user:2")),
    ],
)
def test_targets_parse(text: str, entries: tuple[str, ...]) -> None:
    assert parse_target(text) == entries


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("a:1,", "an empty entry"),
        ("localhost", "is not host:port"),
        ("localhost:http", "is not host:port"),
        ("localhost:70000", "is not host:port"),
        ("::1:50051", "IPv6 address goes in brackets"),
        ("[::1:50051", "IPv6 address goes in brackets"),
        ("[nope]:1", "is not an IPv6 address"),
        ("dns://8.8.8.8/user:50051", "three slashes"),
        ("dns:///", "three slashes"),
        ("dns:///user", "is not host:port"),
    ],
)
def test_bad_targets_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_target(text)


def test_an_address_variable_takes_several_replicas_and_names_itself_when_wrong() -> None:
    config = Config.from_env(
        {"NOVA_USER_ADDRESS": "10.0.0.7:50051,10.0.0.8:50051"}, default_ports=REGISTRY.default_ports
    )
    assert parse_target(config.addresses["user"]) == ("10.0.0.7:50051", "10.0.0.8:50051")
    with pytest.raises(ConfigError, match=r"NOVA_FEED_ADDRESS 'feed' is not host:port"):
        Config.from_env({"NOVA_FEED_ADDRESS": "feed"}, default_ports=REGISTRY.default_ports)


async def test_a_dns_name_resolves_to_its_addresses_and_keeps_its_name() -> None:
    found = await resolve("dns:///localhost:50051")
    assert Endpoint("127.0.0.1:50051", "localhost:50051") in found
    assert all(endpoint.authority == "localhost:50051" for endpoint in found)


async def test_a_name_that_does_not_resolve_raises_os_error() -> None:
    with pytest.raises(OSError, match=r"."):
        await resolve("dns:///no-such-host.invalid:50051")
