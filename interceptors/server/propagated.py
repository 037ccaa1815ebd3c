"""Gives every RPC a request id and keeps its authorization and tenant headers, for all
that follows.

Early in the chain, so every later layer, every log line, the servicer and any call it
makes downstream (the client side reads interceptors.context) see the same values. The
caller's `x-request-id` is kept when it is a short printable token, so one request's lines
join up across services; anything else (too long, control characters that could forge log
lines) is replaced rather than trusted. A call without a usable one takes the trace id of
its span when the telemetry layer, before this one, started one (Call.trace_ids): the
request is then found by either id, and the id costs nothing to make; else a fresh id.
"""

from __future__ import annotations

from collections.abc import Callable
from random import getrandbits

from interceptors import context as rpc
from interceptors.context import AUTHORIZATION_KEY, REQUEST_ID_KEY, TENANT_KEY
from interceptors.server.call import Call, Method

_MAX_REQUEST_ID_LENGTH = 128


def request_id_of(call: Call) -> str:
    """The caller's request id when it is usable, else the call's trace id, else a fresh
    one."""
    sent = call.metadata.get(REQUEST_ID_KEY)
    if (
        isinstance(sent, str)
        and sent
        and len(sent) <= _MAX_REQUEST_ID_LENGTH
        and sent.isascii()
        and sent.isprintable()
    ):
        return sent
    if call.trace_ids is not None:
        return call.trace_ids[0]
    # Not uuid4: a request id needs to be unique, not secret, and urandom is a system call.
    return getrandbits(128).to_bytes(16).hex()


class Propagated:
    """The layer: sets interceptors.context's request id, authorization and tenant while a
    call runs."""

    def for_method(self, method: Method) -> Callable[[Call], None]:
        return _begin


def _begin(call: Call) -> None:
    # request_id_of, without its call for the usual calls: none sent, a trace id to use.
    ids = call.trace_ids
    if ids is not None and REQUEST_ID_KEY not in call.metadata:
        rpc.request_id.set(ids[0])
    else:
        rpc.request_id.set(request_id_of(call))
    authorization = call.metadata.get(AUTHORIZATION_KEY)
    if not isinstance(authorization, str):
        authorization = None
    # Set only when it changes: a call's task starts with the context the server started
    # in, where none is set, and a context variable's set costs more than its get.
    if authorization is not None or rpc.authorization.get() is not None:
        rpc.authorization.set(authorization)
    tenant = call.metadata.get(TENANT_KEY)
    if not isinstance(tenant, str):
        tenant = None
    if tenant is not None or rpc.tenant.get() is not None:
        rpc.tenant.set(tenant)
