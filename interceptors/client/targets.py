"""Where a client's replicas are: a target is one address or several, comma-separated.

- `host:port` (or `[v6]:port`, `unix:/path`) is one replica; gRPC resolves the host itself
  and the pool never asks again.
- `dns:///name:port` is every address `name` resolves to, asked again while the client runs
  (`PoolSettings.resolve_seconds`): a Kubernetes headless Service answers with the address
  of each ready pod, so replicas that start, stop or move are found without a restart.

gRPC Python can resolve a `dns:///` name itself, but its channel then balances inside one
connection set the pool cannot see: a retry could not ask for another replica, and a
replica could not be taken out for what its answers say. So the pool resolves names into
addresses and keeps one set of channels per address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

DNS = "dns:///"
_PASSED_AS_IS = ("unix:", "unix-abstract:")


@dataclass(frozen=True, order=True)
class Endpoint:
    address: str
    """What a channel connects to: "10.0.3.7:50051", "localhost:50051", "unix:/run/user.sock"."""
    authority: str | None = None
    """The name the replica answers to ("user.nova.svc:50051") when `address` is one of its
    resolved addresses: TLS checks the certificate against it, and it is the :authority."""


def parse_target(text: str) -> tuple[str, ...]:
    """The entries of a target (``"a:1, dns:///b:2"`` -> ``("a:1", "dns:///b:2")``); a
    ValueError says what is wrong with the first bad one."""
    entries = tuple(part.strip() for part in text.split(","))
    if not text.strip():
        raise ValueError(
            "is empty; expected host:port, dns:///name:port, or several, comma-separated"
        )
    for entry in entries:
        _check(entry)
    return entries


def is_dns(entry: str) -> bool:
    return entry.startswith(DNS)


async def resolve(entry: str) -> tuple[Endpoint, ...]:
    """Every address a `dns:///name:port` entry resolves to now, sorted (OSError when the
    name resolves to none, e.g. a headless Service with no ready pod)."""
    name, port = _host_port(entry.removeprefix(DNS))
    found = await asyncio.get_running_loop().getaddrinfo(
        name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    authority = f"{name}:{port}"
    return tuple(sorted({Endpoint(_join(str(info[4][0]), port), authority) for info in found}))


def _check(entry: str) -> None:
    if not entry:
        raise ValueError("has an empty entry (a comma too many?)")
    if entry.startswith(_PASSED_AS_IS):
        return
    if entry.startswith("dns:"):
        if not is_dns(entry) or entry == DNS:
            raise ValueError(
                f"{entry!r}: write dns:///name:port (three slashes: a DNS server of its own "
                "is not supported; the system's resolver is used)"
            )
        _host_port(entry.removeprefix(DNS), entry)
        return
    _host_port(entry, entry)


def _host_port(text: str, entry: str | None = None) -> tuple[str, int]:
    shown = entry or text
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{shown!r} is not host:port (a port 0-65535 after the last colon)")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"{shown!r}: an IPv6 address goes in brackets, [::1]:50051")
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{shown!r}: {host!r} in brackets is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"{shown!r}: an IPv6 address goes in brackets, [::1]:50051")
    return host, int(port)


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
