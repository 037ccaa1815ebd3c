"""No tests here: the in-process UserService replicas the test_client_* modules call.

A replica answers GetUser and BatchGetUsers (reads) and UpdateProfile (a write) without a
database, records what each call brought (metadata, deadline, the connection it came on),
and does what a test scripts: fail the next calls with given codes, answer slowly, stop
and start again on the same port, say NOT_SERVING from its health service (the standard
one, as every Nova server has). `Metrics` reads what a client exported.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from interceptors.context import PUSHBACK_KEY
from nova.user.v1 import user_pb2

USER_SERVICE = user_pb2.DESCRIPTOR.services_by_name["UserService"]


@dataclass(frozen=True)
class Seen:
    method: str
    metadata: dict[str, str]
    time_remaining: float | None
    peer: str


@dataclass(frozen=True)
class Failure:
    code: grpc.StatusCode
    pushback_ms: int | None = None


@dataclass
class FakeUsers:
    name: str = "replica"
    delay: float = 0.0
    """Seconds every call takes."""
    failures: list[Failure] = field(default_factory=list)
    """The next calls fail with these, in order."""
    seen: list[Seen] = field(default_factory=list)

    async def GetUser(
        self, request: user_pb2.GetUserRequest, context: aio.ServicerContext[object, object]
    ) -> user_pb2.GetUserResponse:
        await self._serve("GetUser", context)
        return user_pb2.GetUserResponse(user=user_pb2.User(id=self.name, handle=request.handle))

    async def BatchGetUsers(
        self, request: user_pb2.BatchGetUsersRequest, context: aio.ServicerContext[object, object]
    ) -> user_pb2.BatchGetUsersResponse:
        await self._serve("BatchGetUsers", context)
        return user_pb2.BatchGetUsersResponse(missing_ids=request.ids)

    async def UpdateProfile(
        self, request: user_pb2.UpdateProfileRequest, context: aio.ServicerContext[object, object]
    ) -> user_pb2.UpdateProfileResponse:
        await self._serve("UpdateProfile", context)
        return user_pb2.UpdateProfileResponse(user=user_pb2.User(id=self.name))

    def count(self, method: str) -> int:
        return sum(1 for seen in self.seen if seen.method == method)

    async def _serve(self, method: str, context: aio.ServicerContext[object, object]) -> None:
        metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
        self.seen.append(Seen(method, metadata, context.time_remaining(), context.peer()))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failures:
            failure = self.failures.pop(0)
            if failure.pushback_ms is not None:
                context.set_trailing_metadata(((PUSHBACK_KEY, str(failure.pushback_ms)),))
            await context.abort(failure.code, f"{self.name} was told to fail")


class Replica:
    """A FakeUsers server on 127.0.0.1 that can stop and start again on the same port."""

    def __init__(self, servicer: FakeUsers) -> None:
        self.servicer = servicer
        self.port = 0
        self.serving = True
        self._server: aio.Server | None = None
        self._health: Any = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = aio.server()
        server.add_generic_rpc_handlers((self._handlers(),))
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self.port = server.add_insecure_port(self.address)
        await server.start()
        self._server = server
        await self.set_serving(self.serving)

    async def set_serving(self, serving: bool) -> None:
        """What its health service says from now on (also after a restart)."""
        self.serving = serving
        if self._health is not None:
            status = health_pb2.HealthCheckResponse
            await self._health.set("", status.SERVING if serving else status.NOT_SERVING)

    def _handlers(self) -> grpc.GenericRpcHandler[Any, Any]:
        fake = self.servicer
        return grpc.method_handlers_generic_handler(
            USER_SERVICE.full_name,
            {
                "GetUser": _unary(fake.GetUser, user_pb2.GetUserRequest),
                "BatchGetUsers": _unary(fake.BatchGetUsers, user_pb2.BatchGetUsersRequest),
                "UpdateProfile": _unary(fake.UpdateProfile, user_pb2.UpdateProfileRequest),
            },
        )

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = self._health = None


def _unary(
    behavior: Callable[..., Awaitable[Message]], request: type[Message]
) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=request.FromString,
        response_serializer=lambda response: response.SerializeToString(),
    )


@asynccontextmanager
async def replica(servicer: FakeUsers | None = None) -> AsyncIterator[Replica]:
    running = Replica(servicer or FakeUsers())
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


class Metrics:
    """A meter to hand to a client, and the values its instruments recorded."""

    def __init__(self) -> None:
        self._reader = InMemoryMetricReader()
        self.meter = MeterProvider(metric_readers=[self._reader]).get_meter("test")

    def points(self, name: str) -> list[tuple[dict[str, object], float]]:
        """(attributes, value) of each point of a counter or gauge; (attributes, count) of a
        histogram's."""
        data = self._reader.get_metrics_data()
        found: list[tuple[dict[str, object], float]] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(
                            (
                                dict(point.attributes or {}),
                                point.count
                                if isinstance(point, HistogramDataPoint)
                                else getattr(point, "value", 0),
                            )
                            for point in metric.data.data_points
                        )
        return found

    def total(self, name: str) -> float:
        return sum(value for _, value in self.points(name))
