"""The gateway's only way to the services: grpc.aio channels and stubs, and a per-request
view of them that applies the request's deadline and forwards its Authorization header.

Kept to this one module so the shared client stack (interceptors for retries, breakers,
deadline propagation) can replace it without touching resolvers or loaders. Failed RPCs
become BackendError here, at the stub boundary, so nothing above sees grpc exceptions.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from grpc import aio

from gateway.errors import CODE_BY_STATUS, FIXED_MESSAGES, INTERNAL, BackendError
from nova.content.v1 import content_pb2_grpc
from nova.user.v1 import user_pb2_grpc

if TYPE_CHECKING:
    from nova.content.v1.content_pb2_grpc import ContentServiceAsyncStub
    from nova.user.v1.user_pb2_grpc import UserServiceAsyncStub

    UnaryUnaryClientInterceptor = aio.UnaryUnaryClientInterceptor[Any, Any]
else:
    # grpc-stubs makes the interceptor generic; grpcio's runtime class is not subscriptable.
    UnaryUnaryClientInterceptor = aio.UnaryUnaryClientInterceptor

logger = logging.getLogger("nova.gateway")

Request = TypeVar("Request")
Response = TypeVar("Response")


class RpcCounter(UnaryUnaryClientInterceptor):
    """Counts the RPCs started through the gateway's channels, by method name.

    Tests and `nova bench feed` read it to prove the number of calls a query costs.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    async def intercept_unary_unary(
        self,
        continuation: Callable[[aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        method = client_call_details.method
        self.calls[method.decode() if isinstance(method, bytes) else method] += 1
        return await continuation(client_call_details, request)


@dataclass(frozen=True)
class Clients:
    """Stubs over channels opened once per process and shared by every request."""

    users: UserServiceAsyncStub
    content: ContentServiceAsyncStub
    counter: RpcCounter


@asynccontextmanager
async def open_clients(addresses: Mapping[str, str]) -> AsyncIterator[Clients]:
    """Channels to addresses["user"] and addresses["content"], closed on exit."""
    counter = RpcCounter()
    # grpc-stubs types client interceptors as a placeholder that only Any satisfies.
    interceptors: Sequence[Any] = [counter]
    async with AsyncExitStack() as stack:
        user_channel = await stack.enter_async_context(
            aio.insecure_channel(addresses["user"], interceptors=interceptors)
        )
        content_channel = await stack.enter_async_context(
            aio.insecure_channel(addresses["content"], interceptors=interceptors)
        )
        yield Clients(
            users=user_pb2_grpc.UserServiceStub(user_channel),
            content=content_pb2_grpc.ContentServiceStub(content_channel),
            counter=counter,
        )


class Backend:
    """One GraphQL request's calls: each gets the time left until the request's deadline
    and the caller's Authorization header, and the time during which at least one call
    was in flight is summed (the gateway's own time is the rest)."""

    def __init__(self, clients: Clients, *, authorization: str | None, deadline: float) -> None:
        self.users = clients.users
        self.content = clients.content
        self._metadata = (("authorization", authorization),) if authorization else ()
        self._deadline = deadline
        self._in_flight = 0
        self._busy_since = 0.0
        self.busy_seconds = 0.0

    async def call(
        self, method: aio.UnaryUnaryMultiCallable[Request, Response], request: Request
    ) -> Response:
        """``await backend.call(backend.users.GetUser, GetUserRequest(id=...))``"""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise BackendError(grpc.StatusCode.DEADLINE_EXCEEDED, "no time left for the call")
        if self._in_flight == 0:
            self._busy_since = time.perf_counter()
        self._in_flight += 1
        try:
            return await method(request, timeout=remaining, metadata=self._metadata)
        except aio.AioRpcError as error:
            status, details = error.code(), error.details() or ""
            if CODE_BY_STATUS.get(status, INTERNAL) in FIXED_MESSAGES:
                logger.warning("an RPC failed: %s: %s", status.name, details)
            raise BackendError(status, details) from None
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self.busy_seconds += time.perf_counter() - self._busy_since
