"""Maps exceptions to gRPC status codes at the edge of every RPC.

Domain exceptions are looked up along their class's MRO in a table the runtime passes in,
and answered with their message. Anything else is a bug: it is logged with its traceback
and the caller gets INTERNAL with a request id to quote, never the exception's text. The
id is the one the request-context interceptor gave the RPC, so the operator finds this line
beside the RPC's access-log line; without that interceptor it is read from the metadata
here. `context.abort` and cancellation pass through untouched.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import grpc
from grpc import aio

from interceptors import context as rpc
from interceptors._handlers import ServerInterceptor, wrap_handler
from interceptors.request_context import request_id_of

log = logging.getLogger("nova.errors")


class ErrorMappingInterceptor(ServerInterceptor):
    def __init__(self, table: Mapping[type[Exception], grpc.StatusCode]) -> None:
        self._table = dict(table)

    def status_for(self, error: Exception) -> grpc.StatusCode | None:
        for cls in type(error).__mro__:
            if cls in self._table:
                return self._table[cls]
        return None

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
        return wrap_handler(handler, partial(self._scope, details))

    @asynccontextmanager
    async def _scope(
        self, details: grpc.HandlerCallDetails, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        # Decorated once and bound per call: decorating per call cost more than the scope.
        try:
            yield
        except aio.AbortError:
            raise
        except Exception as error:
            code = self.status_for(error)
            if code is None:
                request_id = rpc.request_id.get() or request_id_of(details)
                log.exception("unexpected error in %s (request id %s)", details.method, request_id)
                await context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"internal error; quote request id {request_id} when reporting it",
                )
            await context.abort(code, str(error))
