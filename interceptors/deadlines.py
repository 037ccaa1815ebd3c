"""Gives every call a deadline, carries it in interceptors.context, and refuses hopeless ones.

A call that arrives without a deadline would otherwise let its work, and every call it
makes downstream, run for ever; it gets `default_seconds`, enforced here (a unary-response
call past it is answered DEADLINE_EXCEEDED). Streaming responses are exempt: a watch is
meant to stay open. The remaining time lives in `context.deadline` as an absolute
monotonic time, which the client side turns into the timeout of every outgoing call.

A call with less than `minimum_seconds` left cannot be served in time, so it is answered
DEADLINE_EXCEEDED before any work: the truth about why (RESOURCE_EXHAUSTED would invite a
retry that fails the same way), and it never takes a concurrency slot, since this layer
sits outside backpressure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextvars import Token
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, NoReturn

import grpc
from grpc import aio

from interceptors import context as rpc
from interceptors._handlers import ServerInterceptor, wrap_handler

Rejected = Callable[[str, str], None]
"""Told (reason, method) of each call refused before any work, e.g. to count it."""


@dataclass(frozen=True)
class DeadlineSettings:
    default_seconds: float = 10.0
    """Deadline of a unary-response call that arrives without one."""
    minimum_seconds: float = 0.005
    """A call with less time left than this is refused before any work."""

    def __post_init__(self) -> None:
        if self.default_seconds <= 0 or not 0 <= self.minimum_seconds < self.default_seconds:
            raise ValueError(f"need 0 <= minimum_seconds < default_seconds: {self}")


class DeadlineInterceptor(ServerInterceptor):
    def __init__(self, settings: DeadlineSettings, rejected: Rejected) -> None:
        self.settings = settings
        self._rejected = rejected

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
        unary_response = handler.unary_unary is not None or handler.stream_unary is not None
        return wrap_handler(handler, partial(_Bounded, self, details.method, unary_response))

    async def refuse(
        self, context: aio.ServicerContext[Any, Any], method: str, remaining: float
    ) -> NoReturn:
        self._rejected("deadline", method)
        await context.abort(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"only {remaining * 1000:.1f} ms of the deadline were left; this server "
            f"needs at least {self.settings.minimum_seconds * 1000:g} ms to answer",
        )


class _Bounded:
    """One call, refused if its deadline is too near, else run within it.

    A class, not @asynccontextmanager: every RPC enters one, and this costs a third less.
    """

    __slots__ = ("_context", "_interceptor", "_method", "_timeout", "_token", "_unary_response")

    def __init__(
        self,
        interceptor: DeadlineInterceptor,
        method: str,
        unary_response: bool,
        context: aio.ServicerContext[Any, Any],
    ) -> None:
        self._interceptor = interceptor
        self._method = method
        self._unary_response = unary_response
        self._context = context
        self._token: Token[float | None] | None = None
        self._timeout: asyncio.Timeout | None = None

    async def __aenter__(self) -> None:
        settings = self._interceptor.settings
        remaining = self._context.time_remaining()
        if remaining is not None and remaining < settings.minimum_seconds:
            await self._interceptor.refuse(self._context, self._method, remaining)
        if remaining is None and not self._unary_response:
            return
        budget = settings.default_seconds if remaining is None else remaining
        self._token = rpc.deadline.set(time.monotonic() + budget)
        if remaining is None:
            # Only the default is enforced here: grpc cancels a call past its own deadline.
            self._timeout = asyncio.timeout(budget)
            await self._timeout.__aenter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._timeout is not None:
                try:
                    await self._timeout.__aexit__(kind, error, tb)
                except TimeoutError:  # raised only when the default deadline ran out
                    await self._context.abort(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"the call sent no deadline and ran past the server's default of "
                        f"{self._interceptor.settings.default_seconds:g} s",
                    )
        finally:
            if self._token is not None:
                rpc.deadline.reset(self._token)
