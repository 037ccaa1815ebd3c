"""Maps exceptions to gRPC status codes at the edge of every RPC.

Domain exceptions are looked up along their class's MRO in a table the runtime passes in,
and answered with their message. Anything else is a bug: it is logged with its traceback
and the caller gets INTERNAL with a request id to quote, never the exception's text. The
id is the one the request-context layer gave the RPC, so the operator finds this line
beside the RPC's access-log line; without that layer it is read from the metadata here.
`context.abort` and cancellation pass through untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import grpc
from grpc import aio

from interceptors import context as rpc
from interceptors.server.call import Abort, Call, Every, Method
from interceptors.server.propagated import request_id_of

log = logging.getLogger("nova.errors")


class ErrorMapping:
    """The layer: answers an exception that ends a call with its status code."""

    def __init__(self, table: Mapping[type[Exception], grpc.StatusCode]) -> None:
        self._table = dict(table)

    def status_for(self, error: Exception) -> grpc.StatusCode | None:
        for cls in type(error).__mro__:
            if cls in self._table:
                return self._table[cls]
        return None

    def for_method(self, method: Method) -> Every:
        return Every(_Mapped(self, method.path))


class _Mapped:
    """The mapping's scope, the same for every call of one method: it keeps no state."""

    __slots__ = ("_mapping", "_path")

    def __init__(self, mapping: ErrorMapping, path: str) -> None:
        self._mapping = mapping
        self._path = path

    def end(self, call: Call, error: BaseException | None) -> None:
        if error is None or not isinstance(error, Exception) or isinstance(error, aio.AbortError):
            return
        code = self._mapping.status_for(error)
        if code is None:
            request_id = rpc.request_id.get() or request_id_of(call)
            log.error(
                "unexpected error in %s (request id %s)", self._path, request_id, exc_info=error
            )
            raise Abort(
                grpc.StatusCode.INTERNAL,
                f"internal error; quote request id {request_id} when reporting it",
            )
        raise Abort(code, str(error))
