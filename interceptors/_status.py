"""The status code an RPC ended with, as the layers wrapped around it can tell.

Telemetry, the access log and backpressure each need it when the call ends, and grpc.aio
only says it part of the time: `context.code()` holds what `abort` or `set_code` set, a
call whose deadline expired or whose client went away ends in CancelledError with no code,
and an exception that no layer mapped reaches the client as UNKNOWN.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc

from interceptors import context as rpc

if TYPE_CHECKING:
    from interceptors.chain import Context

# Module constants: an enum member looked up on its class runs Python code (~1k
# instructions), and this runs on every call.
_OK, _UNKNOWN = grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN
_DEADLINE_EXCEEDED, _CANCELLED = grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED


def final_code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    if isinstance(error, asyncio.CancelledError):
        remaining = context.time_remaining()
        if remaining is None:
            # No deadline from the client: the server's default one may have run out.
            remaining = rpc.remaining_seconds()
        expired = remaining is not None and remaining <= 0
        return _DEADLINE_EXCEEDED if expired else _CANCELLED
    code = context.code()
    if code is not None:
        return code
    return _OK if error is None else _UNKNOWN
