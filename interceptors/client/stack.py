"""Clients of Nova's services: per target, a channel pool under one ordered chain of layers.

    users = connect("user", ["localhost:50051"], idempotent=reads(USER_SERVICE))
    stub = users.stub(user_pb2_grpc.UserServiceStub)
    reply = await stub.GetUser(user_pb2.GetUserRequest(handle="grace"), timeout=1)
    await users.close()

The stub has the generated stub's awaitable unary methods (awaiting them is all they
support); each call goes through `chain` below, then out on the next channel of the pool.
gRPC's own client interceptors are bound to one channel, while retries, hedges and the
breaker must see every channel of a target, so the layers wrap the pool instead. Only
methods named in `idempotent` are ever sent twice (retried or hedged).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar, cast

from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio
from opentelemetry import metrics
from opentelemetry.metrics import Meter

from interceptors.client.breaker import Breaker, BreakerSettings
from interceptors.client.call import Invoke, Layer, OutgoingCall
from interceptors.client.channel_pool import ChannelPool, PoolSettings
from interceptors.client.hedging import Hedging, HedgingSettings
from interceptors.client.log import AttemptLog, BreakerLog, CallLog
from interceptors.client.propagation import Propagation, PropagationSettings
from interceptors.client.retry import BudgetSettings, Retry, RetryBudget, RetrySettings
from interceptors.client.tls import ChannelTls

S = TypeVar("S")

READ_PREFIXES = ("Get", "List", "BatchGet", "BatchList")
"""Method names that read; a future BatchCreate must not be taken for one."""


@dataclass(frozen=True)
class ClientSettings:
    pool: PoolSettings = field(default_factory=PoolSettings)
    propagation: PropagationSettings = field(default_factory=PropagationSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    hedging: HedgingSettings = field(default_factory=HedgingSettings)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    tls: ChannelTls | None = None
    """Every channel's TLS (NOVA_TLS_CA_FILE, and a client certificate for mutual TLS);
    None: plaintext."""


def chain(target: str, settings: ClientSettings, meter: Meter) -> list[Layer]:
    """The layers of one target's client, outermost first."""
    budget = RetryBudget(settings.budget)  # one budget: retries and hedges share it
    return [
        # The caller's deadline becomes the timeout that the layers below share out.
        Propagation(settings.propagation),
        # One line and one duration per call as its caller saw it (with its request id).
        CallLog(target, meter),
        # Outside hedging, so a hedged pair that failed can still be retried.
        Retry(settings.retry, budget),
        # A second attempt, to another replica, for a read slower than p95.
        Hedging(settings.hedging, budget),
        # Per attempt: every attempt counts towards it, and its refusals reach Retry,
        # which does not retry them.
        Breaker(target, settings.breaker, [BreakerLog(target, meter)]),
        # Innermost: counts only what went out on the network.
        AttemptLog(target, meter),
    ]


def reads(service: ServiceDescriptor) -> frozenset[str]:
    """Full names of a service's reads, e.g. ``reads(user_pb2.DESCRIPTOR.services_by_name
    ["UserService"])``: the methods that are safe to retry and hedge."""
    return frozenset(
        f"/{service.full_name}/{method.name}"
        for method in service.methods
        if method.name.startswith(READ_PREFIXES)
    )


def connect(
    target: str,
    addresses: Sequence[str],
    *,
    idempotent: Collection[str] = frozenset(),
    settings: ClientSettings = ClientSettings(),
    meter: Meter | None = None,
    outer: Sequence[Layer] = (),
) -> Client:
    """A client of `target` (its name in logs and metrics) at one or more replica addresses.

    Needs a running event loop; `meter` defaults to the global provider's "nova.client".
    `outer` layers run before the chain, e.g. one counting the calls a caller makes.
    """
    meter = meter or metrics.get_meter("nova.client")
    return Client(
        target,
        ChannelPool(addresses, settings.pool, settings.tls),
        [*outer, *chain(target, settings, meter)],
        frozenset(idempotent),
    )


def balanced(
    target: str, addresses: Sequence[str], settings: ClientSettings = ClientSettings()
) -> Client:
    """A client that only spreads calls over the replicas (its pool): no deadline sharing,
    retries, hedges, breaker or logs. For a tool that handles every refusal itself, as
    `nova seed` does; a breaker would count the refusals it waits out."""
    return Client(target, ChannelPool(addresses, settings.pool, settings.tls), [], frozenset())


class Client:
    def __init__(
        self, target: str, pool: ChannelPool, layers: Sequence[Layer], idempotent: frozenset[str]
    ) -> None:
        self.target = target
        self.pool = pool
        self.layers = list(layers)
        self._idempotent = idempotent
        invoke: Invoke = pool
        for layer in reversed(self.layers):
            invoke = functools.partial(layer, proceed=invoke)
        self._invoke = invoke

    @property
    def breaker(self) -> Breaker:
        return next(layer for layer in self.layers if isinstance(layer, Breaker))

    def call(
        self,
        method: str,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str | bytes]] | None = None,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
    ) -> Awaitable[Any]:
        """Calls a unary method by full name ("/package.Service/Method"); await the result."""
        call = OutgoingCall(
            method,
            request,
            request_serializer,
            response_deserializer,
            timeout,
            tuple(metadata or ()),
            method in self._idempotent,
        )
        return self._invoke(call)

    def stub(self, stub_class: Callable[[aio.Channel], S]) -> S:
        """A generated stub (e.g. UserServiceStub) whose unary methods call through this client."""
        return stub_class(cast(aio.Channel, _StubChannel(self)))

    async def close(self) -> None:
        await self.pool.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class _StubChannel:
    """Stands in for the channel a generated stub's constructor takes: each method the stub
    asks for becomes a call through the client."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool = False,
    ) -> _UnaryMethod:
        return _UnaryMethod(self._client, method, request_serializer, response_deserializer)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> _StreamingMethod:
        return _StreamingMethod(method)

    stream_unary = stream_stream = unary_stream


class _UnaryMethod:
    def __init__(
        self,
        client: Client,
        method: str,
        request_serializer: Callable[[Any], bytes] | None,
        response_deserializer: Callable[[bytes], Any] | None,
    ) -> None:
        self._client = client
        self._method = method
        self._request_serializer = request_serializer
        self._response_deserializer = response_deserializer

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str | bytes]] | None = None,
    ) -> Awaitable[Any]:
        return self._client.call(
            self._method,
            request,
            timeout=timeout,
            metadata=metadata,
            request_serializer=self._request_serializer,
            response_deserializer=self._response_deserializer,
        )


class _StreamingMethod:
    def __init__(self, method: str) -> None:
        self._method = method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"{self._method} streams; Nova clients make unary calls only (use a plain channel)"
        )
