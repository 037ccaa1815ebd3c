"""The caller's address: the gRPC peer, or what a trusted proxy names; nobody else can
choose theirs, and an IPv6 host counts by its /64."""

import pytest

from services.runtime.client_address import (
    LOOPBACK,
    client_address,
    parse_networks,
    peer_address,
)
from services.runtime.env import ConfigError
from services.runtime.errors import InvalidArgument

GATEWAY = parse_networks("NOVA_TRUSTED_PROXIES", "10.0.0.0/8, 2001:db8:1::/48")


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:203.0.113.7:51234", "203.0.113.7"),
        ("ipv6:[2001:db8::1]:443", "2001:db8::1"),
        ("ipv6:%5B2001:db8::1%5D:443", "2001:db8::1"),
        ("ipv6:%5B::ffff:203.0.113.7%5D:443", "203.0.113.7"),
        ("unix:/tmp/nova.sock", None),
        ("nonsense", None),
    ],
)
def test_a_peer_string_gives_its_ip_without_the_port(peer: str, address: str | None) -> None:
    found = peer_address(peer)
    assert (str(found) if found else None) == address


def test_an_untrusted_caller_is_its_peer_whatever_address_it_names() -> None:
    assert client_address("ipv4:203.0.113.7:5000", "198.51.100.1", GATEWAY) == "203.0.113.7"
    assert client_address("ipv4:203.0.113.7:5000", "not even an ip", GATEWAY) == "203.0.113.7"


def test_a_trusted_proxy_speaks_for_its_client_and_is_not_limited_itself() -> None:
    assert client_address("ipv4:10.1.2.3:5000", "198.51.100.1", GATEWAY) == "198.51.100.1"
    assert client_address("ipv4:10.1.2.3:5000", None, GATEWAY) is None
    assert client_address("ipv6:[::1]:5000", "198.51.100.1", LOOPBACK) == "198.51.100.1"
    with pytest.raises(InvalidArgument, match="nova-client-address metadata must be one IP"):
        client_address("ipv4:10.1.2.3:5000", "198.51.100.1, 10.0.0.1", GATEWAY)


def test_ipv6_callers_count_by_their_64_bit_prefix() -> None:
    one = client_address("ipv6:[2001:db8:aa:bb::1]:5000", None, GATEWAY)
    other = client_address("ipv6:[2001:db8:aa:bb:ffff::2]:5000", None, GATEWAY)
    assert one == other == "2001:db8:aa:bb::/64"
    forwarded = client_address("ipv6:[2001:db8:1::9]:5000", "2001:db8:aa:cc::1", GATEWAY)
    assert forwarded == "2001:db8:aa:cc::/64"


def test_trusted_proxies_are_networks_or_none() -> None:
    assert parse_networks("NOVA_TRUSTED_PROXIES", "none") == ()
    assert [str(n) for n in parse_networks("X", "192.168.1.7,fd00::/8")] == [
        "192.168.1.7/32",
        "fd00::/8",
    ]
    with pytest.raises(ConfigError, match="NOVA_TRUSTED_PROXIES must be comma-separated"):
        parse_networks("NOVA_TRUSTED_PROXIES", "10.0.0.0/8,gateway.local")
