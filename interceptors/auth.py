"""Verifies `authorization: Bearer <token>` metadata and exposes the caller to servicers.

A call without the header runs anonymously (the contextvar holds None; each servicer
decides whether that is allowed). A call with a header that does not verify is rejected
with UNAUTHENTICATED before the servicer runs, so a typo never silently downgrades a
caller to anonymous.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

import grpc
from grpc import aio

from interceptors._handlers import ServerInterceptor, metadata_value, wrap_handler

T = TypeVar("T")


class AuthInterceptor(ServerInterceptor, Generic[T]):
    """`verify` turns a token into a caller or raises `invalid` with a message for people."""

    def __init__(
        self,
        verify: Callable[[str], T],
        caller: ContextVar[T | None],
        invalid: type[Exception],
    ) -> None:
        self._verify = verify
        self._caller = caller
        self._invalid = invalid

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
        header = metadata_value(details, "authorization")
        caller: T | None = None
        problem: str | None = None
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                problem = "authorization metadata must look like 'Bearer <token>'"
            else:
                try:
                    caller = self._verify(token.strip())
                except self._invalid as error:
                    problem = str(error)

        @asynccontextmanager
        async def scope(context: aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
            if problem is not None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)
            reset = self._caller.set(caller)
            try:
                yield
            finally:
                self._caller.reset(reset)

        return wrap_handler(handler, scope)
