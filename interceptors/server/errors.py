"""Maps exceptions to gRPC status codes at the edge of every RPC.

Domain exceptions are looked up along their class's MRO in a table the runtime passes in,
and answered with their message, or with the table's fixed message where the exception's
own text is not for callers (a database driver's, which may name hosts); those are logged
with their own text, one line each, so an operator still sees what happened. An exception with a
`trailing_metadata` attribute (pairs of strings) has it sent with its status. Anything
else is a bug: it is logged with its traceback and the caller gets INTERNAL with a request
id to quote, never the exception's text. The id is the one the propagated layer gave the
RPC, so the operator finds this line beside the RPC's access-log line; without that layer
it is read from the metadata here.
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


Answer = grpc.StatusCode | tuple[grpc.StatusCode, str]
"""A status code, answered with the exception's message; or a code and a fixed message."""


class ErrorMapping:
    """The layer: answers an exception that ends a call with its status code."""

    def __init__(self, table: Mapping[type[Exception], Answer]) -> None:
        self._table = {
            cls: (answer, None) if isinstance(answer, grpc.StatusCode) else answer
            for cls, answer in table.items()
        }

    def answer_for(self, error: Exception) -> tuple[grpc.StatusCode, str | None] | None:
        """The code and the fixed message (None: the error's own) of the nearest class of
        `error` in the table, or None for an unexpected error."""
        for cls in type(error).__mro__:
            found = self._table.get(cls)
            if found is not None:
                return found
        return None

    def status_for(self, error: Exception) -> grpc.StatusCode | None:
        found = self.answer_for(error)
        return None if found is None else found[0]

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
        found = self._mapping.answer_for(error)
        if found is None:
            request_id = rpc.request_id.get() or request_id_of(call)
            log.error(
                "unexpected error in %s (request id %s)", self._path, request_id, exc_info=error
            )
            raise Abort(
                grpc.StatusCode.INTERNAL,
                f"internal error; quote request id {request_id} when reporting it",
            )
        code, message = found
        if message is None:
            # An error may say more in trailing metadata (a refusal's retry hint).
            raise Abort(code, str(error), getattr(error, "trailing_metadata", ()))
        request_id = rpc.request_id.get() or request_id_of(call)
        log.warning(
            "%s answered %s (request id %s): %s: %s",
            self._path,
            code.name,
            request_id,
            type(error).__name__,
            error,
        )
        raise Abort(code, message)
