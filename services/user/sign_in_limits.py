"""Rate limits of log-in (Authenticate: per login, per client address) and sign-up
(CreateUser: per client address), checked before any password is hashed.

A refusal is RESOURCE_EXHAUSTED "… try again in N s" with the wait in
`grpc-retry-pushback-ms` and `nova-refusal: caller`, so that it reaches the one caller it
is about and no client's circuit breaker counts it against the service.

The per-login limit holds whoever asks, so someone guessing one login's password from many
addresses is slowed as much as from one; the price is that they also slow that login's
owner (who, once signed in, holds a token for its lifetime).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from grpc import aio

from interceptors.context import CLIENT_ADDRESS_KEY
from services.runtime.client_address import client_address
from services.runtime.errors import Refused
from services.runtime.rate_limit import RateLimiter
from services.runtime.sign_in import SignInSettings


def login_key(login: str) -> str:
    """A login as the repository finds it (handles and e-mails match whatever their case),
    so that changing the case of a login does not give it a fresh limit."""
    return login.strip().lower()


class SignInLimits:
    def __init__(
        self, settings: SignInSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        keys = settings.rate_limit_keys
        self._per_login = RateLimiter(settings.authenticate_per_login, max_keys=keys, clock=clock)
        self._log_ins = RateLimiter(settings.authenticate_per_address, max_keys=keys, clock=clock)
        self._sign_ups = RateLimiter(settings.create_user_per_address, max_keys=keys, clock=clock)
        self._trusted = settings.trusted_proxies

    def check_log_in(self, context: aio.ServicerContext[Any, Any], login: str) -> None:
        """Counts one log-in attempt, or raises Refused."""
        address = self._address(context)
        if address is not None:
            _take(self._log_ins, address, "too many log-in attempts from your address")
        _take(self._per_login, login_key(login), "too many log-in attempts for this login")

    def check_sign_up(self, context: aio.ServicerContext[Any, Any]) -> None:
        """Counts one account creation, or raises Refused."""
        address = self._address(context)
        if address is not None:
            _take(self._sign_ups, address, "too many accounts created from your address")

    def _address(self, context: aio.ServicerContext[Any, Any]) -> str | None:
        forwarded = None
        for key, value in context.invocation_metadata() or ():
            if key == CLIENT_ADDRESS_KEY and isinstance(value, str):
                forwarded = value
                break
        return client_address(context.peer(), forwarded, self._trusted)


def _take(limiter: RateLimiter, key: str, what: str) -> None:
    wait = limiter.try_acquire(key)
    if wait > 0:
        raise Refused(
            f"{what} ({limiter.rate}); try again in {math.ceil(wait)} s",
            retry_after_seconds=wait,
            scope="caller",
        )
