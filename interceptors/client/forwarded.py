"""A proxy's word about its own client: the client's IP address as `nova-client-address`
metadata, which services believe only from their NOVA_TRUSTED_PROXIES (they limit
sign-ins by it, and without it every client of a gateway would share the gateway's)."""

from __future__ import annotations

import ipaddress

from interceptors.client.call import Metadata
from interceptors.context import CLIENT_ADDRESS_KEY


def forwarded_for(address: str | None) -> Metadata:
    """The metadata naming `address`; none for an address that is not an IP (a test
    client's name, a Unix socket), which a service could not use."""
    if not address:
        return ()
    try:
        return ((CLIENT_ADDRESS_KEY, str(ipaddress.ip_address(address))),)
    except ValueError:
        return ()
