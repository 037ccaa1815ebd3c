"""Carries the serving RPC's deadline, trace, caller and request id onto every outgoing call.

A service calling another while it serves a request must not let the downstream call
outlive its own caller, must show up in the same trace and the same request's logs, and
must act for the same user. The server interceptors put those in interceptors.context;
here they go out as the call's timeout (the smaller of an explicit timeout and what is
left of the deadline) and as metadata: W3C `traceparent` (through OpenTelemetry's
configured propagator), `authorization` and `x-nova-tenant` (unless the call sets its
own) and
`x-request-id` (a fresh one for a call made outside any RPC, so the client's and the
server's logs of it still join up). A call with no deadline from anywhere gets
`default_timeout_seconds`: no outgoing call waits forever.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

import grpc
from grpc import aio
from opentelemetry import propagate

from interceptors import context
from interceptors.client.call import Invoke, OutgoingCall
from interceptors.context import AUTHORIZATION_KEY, REQUEST_ID_KEY, TENANT_KEY


@dataclass(frozen=True)
class PropagationSettings:
    default_timeout_seconds: float | None = 10.0

    def __post_init__(self) -> None:
        if self.default_timeout_seconds is not None and self.default_timeout_seconds <= 0:
            raise ValueError(f"default_timeout_seconds must be > 0 or None: {self}")


class Propagation:
    def __init__(self, settings: PropagationSettings) -> None:
        self._settings = settings

    async def __call__(self, call: OutgoingCall, proceed: Invoke) -> Any:
        timeout = self._timeout(call)
        if timeout is not None and timeout <= 0:
            raise aio.AioRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                aio.Metadata(),
                aio.Metadata(),
                f"the caller's deadline passed before {call.method} was sent",
                None,
            )
        present = {key for key, _ in call.metadata}
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        added = [(key, value) for key, value in carrier.items() if key not in present]
        authorization = context.authorization.get()
        if authorization is not None and AUTHORIZATION_KEY not in present:
            added.append((AUTHORIZATION_KEY, authorization))
        tenant = context.tenant.get()
        if tenant is not None and TENANT_KEY not in present:
            added.append((TENANT_KEY, tenant))
        if REQUEST_ID_KEY not in present:
            added.append((REQUEST_ID_KEY, context.request_id.get() or uuid.uuid4().hex))
        return await proceed(replace(call, timeout=timeout, metadata=(*call.metadata, *added)))

    def _timeout(self, call: OutgoingCall) -> float | None:
        remaining = context.remaining_seconds()
        if remaining is None:
            return self._settings.default_timeout_seconds if call.timeout is None else call.timeout
        return remaining if call.timeout is None else min(call.timeout, remaining)
