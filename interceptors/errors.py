"""Maps exceptions to gRPC status codes at the edge of every RPC.

Domain exceptions are looked up along their class's MRO in a table the runtime passes in,
and answered with their message. Anything else is a bug: it is logged with its traceback
and the caller gets INTERNAL with a request id to quote, never the exception's text.
`context.abort` and cancellation pass through untouched.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import grpc
from grpc import aio

from interceptors._handlers import ServerInterceptor, metadata_value, wrap_handler

log = logging.getLogger("nova.errors")

REQUEST_ID_KEY = "x-request-id"


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
        method = details.method
        request_id = metadata_value(details, REQUEST_ID_KEY) or uuid.uuid4().hex

        @asynccontextmanager
        async def scope(context: aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
            try:
                yield
            except aio.AbortError:
                raise
            except Exception as error:
                code = self.status_for(error)
                if code is None:
                    log.exception("unexpected error in %s (request id %s)", method, request_id)
                    await context.abort(
                        grpc.StatusCode.INTERNAL,
                        f"internal error; quote request id {request_id} when reporting it",
                    )
                await context.abort(code, str(error))

        return wrap_handler(handler, scope)
