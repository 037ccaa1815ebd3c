"""How a client opens a channel: plaintext, or TLS with the roots (and identity) it is given.

Settings hold PEM bytes rather than grpc credentials, so they compare, print (without the
key) and build anywhere; the credentials are made once per pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio


@dataclass(frozen=True)
class ChannelTls:
    """The certificates a client trusts and, for servers that require one (mutual TLS),
    the certificate it presents with its private key; all PEM."""

    root_certificates: bytes
    certificate_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("a client certificate needs its private key, and a key its chain")

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            self.root_certificates, self.private_key, self.certificate_chain
        )


def open_channel(
    address: str,
    credentials: grpc.ChannelCredentials | None,
    options: Sequence[tuple[str, Any]] = (),
) -> aio.Channel:
    """A TLS channel with `credentials` (from ChannelTls.credentials), else a plaintext one."""
    if credentials is None:
        return aio.insecure_channel(address, options=options)
    return aio.secure_channel(address, credentials, options=options)
