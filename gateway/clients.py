"""The gateway's only way to the services: Nova's client stack (interceptors.client:
channel pool, retries of reads within a budget, circuit breaker, deadline/trace/request-id
propagation) to every target it is given (the process gives it every registered service),
and a per-request view of it that applies the request's deadline and forwards its
Authorization header.

Failed RPCs become BackendError here, at the stub boundary, so nothing above sees grpc
exceptions.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio

from gateway.errors import CODE_BY_STATUS, FIXED_MESSAGES, INTERNAL, BackendError
from interceptors.client.call import Invoke, Layer, OutgoingCall
from interceptors.client.forwarded import forwarded_for
from interceptors.client.refusal import refusal_of
from interceptors.client.stack import ClientSettings, connect, reads

if TYPE_CHECKING:
    from nova.analytics.v1.analytics_pb2_grpc import AnalyticsServiceAsyncStub
    from nova.content.v1.content_pb2_grpc import ContentServiceAsyncStub
    from nova.feed.v1.feed_pb2_grpc import FeedServiceAsyncStub
    from nova.user.v1.user_pb2_grpc import UserServiceAsyncStub

logger = logging.getLogger("nova.gateway")

Request = TypeVar("Request")
Response = TypeVar("Response")


class RpcCounter:
    """Counts the RPCs the gateway asks for, by method name (retries and hedges not
    counted again): the outermost client layer of both services.

    Tests and `./dev bench feed` read it to prove the number of calls a query costs.
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
class Target:
    """A service the gateway may call: where it is, its proto service (whose reads are the
    methods retried and hedged) and the generated stub class to call it with."""

    address: str
    """One replica or several: host:port, dns:///name:port, or a comma-separated list of
    them (interceptors.client.targets); calls take turns over the healthy ones."""
    service: ServiceDescriptor
    stub: Callable[[aio.Channel], Any]


REQUIRED = ("user", "content", "feed", "analytics")
"""The services the resolvers call, by the names the services register under."""


@dataclass(frozen=True)
class Clients:
    """Stubs over clients opened once per process and shared by every request: one per
    target, by name."""

    stubs: Mapping[str, Any]
    counter: RpcCounter

    @property
    def users(self) -> UserServiceAsyncStub:
        return cast("UserServiceAsyncStub", self.stubs["user"])

    @property
    def content(self) -> ContentServiceAsyncStub:
        return cast("ContentServiceAsyncStub", self.stubs["content"])

    @property
    def feed(self) -> FeedServiceAsyncStub:
        return cast("FeedServiceAsyncStub", self.stubs["feed"])

    @property
    def analytics(self) -> AnalyticsServiceAsyncStub:
        return cast("AnalyticsServiceAsyncStub", self.stubs["analytics"])


@asynccontextmanager
async def open_clients(
    targets: Mapping[str, Target],
    settings: ClientSettings | None = None,
    *,
    observers: Sequence[Layer] = (),
) -> AsyncIterator[Clients]:
    """A client of each target, closed on exit; `observers` are extra outer layers (tests
    use one to record every request)."""
    missing = [name for name in REQUIRED if name not in targets]
    if missing:
        raise ValueError(
            f"the gateway calls the {', '.join(missing)} service(s), which no target "
            f"names (targets: {', '.join(sorted(targets)) or 'none'})"
        )
    settings = settings or ClientSettings()
    counter = RpcCounter()
    async with AsyncExitStack() as stack:
        stubs = {}
        for name, target in targets.items():
            client = await stack.enter_async_context(
                connect(
                    name,
                    [target.address],
                    idempotent=reads(target.service),
                    settings=settings,
                    outer=[counter, *observers],
                )
            )
            stubs[name] = client.stub(target.stub)
        yield Clients(stubs=stubs, counter=counter)


class Backend:
    """One GraphQL request's calls: each gets the time left until the request's deadline
    and the caller's Authorization and X-Nova-Tenant headers, and the time during which at
    least one call was in flight is summed (the gateway's own time is the rest)."""

    def __init__(
        self,
        clients: Clients,
        *,
        authorization: str | None,
        deadline: float,
        client_address: str | None = None,
        tenant: str | None = None,
    ) -> None:
        self.users = clients.users
        self.content = clients.content
        self.feed = clients.feed
        self.analytics = clients.analytics
        # The HTTP client's address, for the services' sign-in limits (which believe it
        # from trusted proxies only), on every call.
        self._metadata = (
            ((("authorization", authorization),) if authorization else ())
            + ((("x-nova-tenant", tenant),) if tenant else ())
            + forwarded_for(client_address)
        )
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
            raise BackendError(status, details, refusal=refusal_of(error)) from None
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self.busy_seconds += time.perf_counter() - self._busy_since
