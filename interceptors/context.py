"""Per-RPC values that server interceptors set and client interceptors read.

A service that calls another while serving a request passes these on without any code of
its own: the remaining deadline (so a downstream call never outlives its caller), the
request id (so logs of one request join up across services), and the caller's
authorization and tenant headers (so the callee sees the same user, in the same
tenant). Trace context travels through OpenTelemetry's own context, not here.
"""

import time
from contextvars import ContextVar

REQUEST_ID_KEY = "x-request-id"
"""Metadata key of the request id, which the server keeps or makes and clients pass on."""
AUTHORIZATION_KEY = "authorization"
"""Metadata key of the caller's credentials ("Bearer <token>")."""
TENANT_KEY = "x-nova-tenant"
"""Metadata key of the tenant a call acts in (its slug); none: the caller's token's, or the
default tenant for an anonymous call."""
PUSHBACK_KEY = "grpc-retry-pushback-ms"
"""Trailing metadata of a refusal: how long to wait before retrying (gRPC's retry design,
A6); the server's backpressure sends it, the client's breaker and retry honour it."""
CLIENT_ADDRESS_KEY = "nova-client-address"
"""Metadata a proxy (the gateway) sends with each call: the IP address of the client it
serves, which a service believes only from its NOVA_TRUSTED_PROXIES."""
REFUSAL_KEY = "nova-refusal"
"""Trailing metadata of a refusal that says nothing about the server's health: "caller"
(this caller is over its rate limit) or "method" (this method's own capacity is full, the
rest of the server serves). Clients' circuit breakers do not count these as failures, so
one caller can never open a breaker for everyone."""
REFUSAL_CALLER = "caller"
REFUSAL_METHOD = "method"

deadline: ContextVar[float | None] = ContextVar("nova_deadline", default=None)
"""Absolute time.monotonic() by which the current RPC must answer; None when unbounded."""

request_id: ContextVar[str | None] = ContextVar("nova_request_id", default=None)

authorization: ContextVar[str | None] = ContextVar("nova_authorization", default=None)
"""The raw `authorization` metadata value of the RPC being served, if any."""

tenant: ContextVar[str | None] = ContextVar("nova_tenant", default=None)
"""The raw `x-nova-tenant` metadata value of the RPC being served, if any: passed on to the
services it calls, so an anonymous call stays in the tenant it named."""


def remaining_seconds() -> float | None:
    """Seconds left before the current RPC's deadline (may be negative), or None."""
    until = deadline.get()
    return None if until is None else until - time.monotonic()
