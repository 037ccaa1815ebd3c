"""The seam every client layer shares: `OutgoingCall`, the one call that layers adjust and
pass down, and `Invoke`/`Layer`; the channel pool is the Invoke at the end of the stack,
and `ReplicaLost` what it tells the layers about a failure that was one replica's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from grpc import aio

Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True, slots=True)
class OutgoingCall:
    method: str
    """Full method name: "/package.Service/Method"."""
    request: Any
    request_serializer: Callable[[Any], bytes] | None
    response_deserializer: Callable[[bytes], Any] | None
    timeout: float | None
    metadata: Metadata
    idempotent: bool
    """Declared safe to send more than once (reads): retries and hedges only for these."""
    tried: list[str] = field(default_factory=list)
    """Addresses this call's attempts went to, so the next attempt can pick another replica."""


Invoke = Callable[[OutgoingCall], Awaitable[Any]]


class Layer(Protocol):
    """One client concern: does its part and calls `proceed` (zero, one or more times)."""

    async def __call__(self, call: OutgoingCall, proceed: Invoke) -> Any: ...


class ReplicaLost(aio.AioRpcError):
    """An attempt failed UNAVAILABLE on one replica, which the pool took out, while others
    remain: the target is still up, so the breaker does not count it (a retry goes to
    another replica)."""

    def __init__(self, error: aio.AioRpcError, address: str) -> None:
        super().__init__(
            error.code(),
            error.initial_metadata(),
            cast(aio.Metadata, error.trailing_metadata()),
            error.details(),
            error.debug_error_string(),
        )
        self.address = address
