"""Who is calling, as a network address: the key of per-address rate limits.

The caller is the gRPC peer ("ipv4:203.0.113.7:51234"), unless the peer is one of the
trusted proxies (NOVA_TRUSTED_PROXIES; the gateway), which call on behalf of their own
clients and name each in `nova-client-address` metadata. Anyone else's
`nova-client-address` is ignored: a client cannot choose its own limit.

IPv6 addresses count by their /64 prefix, which is what one subscriber gets: counted one
by one, a single host could take a fresh limit for every call.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import unquote

from services.runtime.env import ConfigError
from services.runtime.errors import InvalidArgument

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
"""The default trusted proxies: a gateway on the same host, as under `nova up`."""


def parse_networks(name: str, raw: str) -> tuple[Network, ...]:
    """ "10.0.0.0/8, 192.168.1.7" -> networks; "none" -> (); for the variable `name`."""
    if raw.strip().lower() == "none":
        return ()
    networks = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(
                f"{name} must be comma-separated addresses or CIDR networks "
                f"(e.g. 10.0.0.0/8,::1), or none; got {item!r}"
            ) from None
    return tuple(networks)


def peer_address(peer: str) -> Address | None:
    """The IP address of a grpc peer string ("ipv4:1.2.3.4:5678", "ipv6:%5B::1%5D:5678"), or
    None for one that has none (a Unix socket)."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    # grpc writes the IPv6 brackets percent-encoded ("ipv6:%5B::1%5D:5678").
    host = unquote(rest).rpartition(":")[0].removeprefix("[").removesuffix("]")
    try:
        return _plain(ipaddress.ip_address(host.partition("%")[0]))
    except ValueError:
        return None


def client_address(peer: str, forwarded: str | None, trusted: Sequence[Network]) -> str | None:
    """The key of the caller's address, or None for a trusted proxy's own call.

    A trusted proxy that names no client is calling for itself (`nova seed`, a benchmark,
    another service): it has no client address to limit, and trusting it already means
    it could name any address it liked.
    """
    address = peer_address(peer)
    if address is None:
        return peer
    if not any(address in network for network in trusted):
        return _key(address)
    if forwarded is None:
        return None
    try:
        named = _plain(ipaddress.ip_address(forwarded.strip()))
    except ValueError:
        raise InvalidArgument(
            f"nova-client-address metadata must be one IP address, got {forwarded[:60]!r}"
        ) from None
    return _key(named)


def _plain(address: Address) -> Address:
    """An IPv4-mapped IPv6 address ("::ffff:1.2.3.4") as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _key(address: Address) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
