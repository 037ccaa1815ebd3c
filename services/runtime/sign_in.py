"""The settings that keep sign-in and sign-up from taking a service down: rate limits of
Authenticate and CreateUser, whom to believe about a client's address, and how many
password hashes may run and wait at once (each costs tens of ms of CPU and, under the
default profile, 64 MiB)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from services.runtime.client_address import LOOPBACK, Network
from services.runtime.rate_limit import Rate


def default_hash_concurrency() -> int:
    """One hash per CPU: argon2 releases the GIL, so more would only queue in the kernel."""
    return os.cpu_count() or 1


@dataclass(frozen=True)
class SignInSettings:
    authenticate_per_login: Rate = field(default_factory=lambda: Rate(per_minute=5, burst=10))
    """Password guesses against one login, from anywhere."""
    authenticate_per_address: Rate = field(default_factory=lambda: Rate(per_minute=30, burst=30))
    """Log-ins from one client address, whatever the login."""
    create_user_per_address: Rate = field(default_factory=lambda: Rate(per_minute=5, burst=10))
    """Accounts created from one client address."""
    rate_limit_keys: int = 100_000
    """Keys each limit remembers at most (least recently used forgotten first)."""
    trusted_proxies: tuple[Network, ...] = LOOPBACK
    """Peers whose `nova-client-address` metadata is believed (the gateway's addresses)."""
    hash_concurrency: int = field(default_factory=default_hash_concurrency)
    """Password hashes computed at once."""
    hash_queue: int = field(default_factory=lambda: 2 * default_hash_concurrency())
    """Hashes that may wait for one of those; past them sign-ins are refused at once."""

    def __post_init__(self) -> None:
        if self.rate_limit_keys < 1 or self.hash_concurrency < 1 or self.hash_queue < 0:
            raise ValueError(
                f"need rate_limit_keys >= 1, hash_concurrency >= 1, hash_queue >= 0: {self}"
            )
