"""The gateway's only way to the services: Nova's client stack (channel pool, retries of
reads within a budget, circuit breaker, deadline/trace/request-id propagation), and a
per-request view of it that applies the request's deadline and forwards its
Authorization header.

Failed RPCs become BackendError here, at the stub boundary, so nothing above sees grpc
exceptions.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from grpc import aio

from gateway.errors import CODE_BY_STATUS, FIXED_MESSAGES, INTERNAL, BackendError
from interceptors.channel_pool import Invoke, Layer, OutgoingCall
from nova.content.v1 import content_pb2, content_pb2_grpc
from nova.user.v1 import user_pb2, user_pb2_grpc
from services.runtime.clients import ClientSettings, connect, reads

if TYPE_CHECKING:
    from nova.content.v1.content_pb2_grpc import ContentServiceAsyncStub
    from nova.user.v1.user_pb2_grpc import UserServiceAsyncStub

logger = logging.getLogger("nova.gateway")

Request = TypeVar("Request")
Response = TypeVar("Response")


class RpcCounter:
    """Counts the RPCs the gateway asks for, by method name (retries and hedges not
    counted again): the outermost client layer of both services.

    Tests and `nova bench feed` read it to prove the number of calls a query costs.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    async def __call__(self, call: OutgoingCall, proceed: Invoke) -> Any:
        self.calls[call.method] += 1
        return await proceed(call)


@dataclass(frozen=True)
class Clients:
    """Stubs over clients opened once per process and shared by every request."""

    users: UserServiceAsyncStub
    content: ContentServiceAsyncStub
    counter: RpcCounter


@asynccontextmanager
async def open_clients(
    addresses: Mapping[str, str],
    settings: ClientSettings | None = None,
    *,
    observers: Sequence[Layer] = (),
) -> AsyncIterator[Clients]:
    """Clients of addresses["user"] and addresses["content"], closed on exit; `observers`
    are extra outer layers (tests use one to record every request)."""
    settings = settings or ClientSettings()
    counter = RpcCounter()
    async with AsyncExitStack() as stack:
        users = await stack.enter_async_context(
            connect(
                "user",
                [addresses["user"]],
                idempotent=reads(user_pb2.DESCRIPTOR.services_by_name["UserService"]),
                settings=settings,
                outer=[counter, *observers],
            )
        )
        content = await stack.enter_async_context(
            connect(
                "content",
                [addresses["content"]],
                idempotent=reads(content_pb2.DESCRIPTOR.services_by_name["ContentService"]),
                settings=settings,
                outer=[counter, *observers],
            )
        )
        yield Clients(
            users=users.stub(user_pb2_grpc.UserServiceStub),
            content=content.stub(content_pb2_grpc.ContentServiceStub),
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
