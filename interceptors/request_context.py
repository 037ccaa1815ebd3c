"""Gives every RPC a request id and keeps its authorization header, for all that follows.

Outermost in the chain, so every later layer, every log line, the servicer and any call it
makes downstream (the client side reads interceptors.context) see the same values. The
caller's `x-request-id` is kept when it is a short printable token, so one request's lines
join up across services; anything else (absent, too long, control characters that could
forge log lines) is replaced by a fresh id rather than trusted.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import grpc
from grpc import aio

from interceptors import context as rpc
from interceptors._handlers import ServerInterceptor, metadata_value, wrap_handler

REQUEST_ID_KEY = "x-request-id"
_MAX_REQUEST_ID_LENGTH = 128


def request_id_of(details: grpc.HandlerCallDetails) -> str:
    """The caller's request id when it is usable, else a fresh one."""
    sent = metadata_value(details, REQUEST_ID_KEY)
    if sent and len(sent) <= _MAX_REQUEST_ID_LENGTH and sent.isascii() and sent.isprintable():
        return sent
    # Not uuid4: a request id needs to be unique, not secret, and urandom is a system call.
    return f"{random.getrandbits(128):032x}"


class RequestContextInterceptor(ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        if handler is None:
            return handler
        return wrap_handler(handler, partial(_RequestScope, details))


class _RequestScope:
    """One call's request id and authorization header, set while it runs.

    A class, not @asynccontextmanager: every RPC enters one, and this costs a third less.
    """

    __slots__ = ("_authorization", "_details", "_request_id")

    def __init__(
        self, details: grpc.HandlerCallDetails, context: aio.ServicerContext[Any, Any]
    ) -> None:
        self._details = details

    async def __aenter__(self) -> None:
        details = self._details
        self._request_id = rpc.request_id.set(request_id_of(details))
        self._authorization = rpc.authorization.set(metadata_value(details, "authorization"))

    async def __aexit__(self, *exc_info: object) -> None:
        rpc.authorization.reset(self._authorization)
        rpc.request_id.reset(self._request_id)
