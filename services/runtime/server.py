"""Starts one service as a grpc.aio server with reflection, health and the interceptors.

Health reports SERVING once the server is up (migrations have run before it starts) and
NOT_SERVING as soon as draining begins, so load balancers stop sending before the grace
period ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from interceptors.auth import AuthInterceptor
from interceptors.errors import ErrorMappingInterceptor
from services.runtime.auth import current_caller
from services.runtime.errors import STATUS_BY_ERROR, Unauthenticated
from services.runtime.service import Dependencies, ServiceSpec

_OPTIONS = [
    # Without this, grpc sets SO_REUSEPORT and a second Nova on the same port would
    # silently share it instead of failing to start.
    ("grpc.so_reuseport", 0),
]


class PortInUse(RuntimeError):
    pass


def server_interceptors(deps: Dependencies) -> list[aio.ServerInterceptor[Any, Any]]:
    """The server chain, outermost first: error mapping sees everything the others raise."""
    return [
        ErrorMappingInterceptor(STATUS_BY_ERROR),
        AuthInterceptor(deps.tokens.verify, current_caller, Unauthenticated),
    ]


@dataclass
class RunningServer:
    spec: ServiceSpec
    server: aio.Server
    health: Any  # grpc_health.v1.health.aio.HealthServicer (untyped)
    port: int

    async def stop(self, grace_seconds: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_seconds)


async def start_server(
    spec: ServiceSpec, deps: Dependencies, *, host: str, port: int
) -> RunningServer:
    server = aio.server(interceptors=server_interceptors(deps), options=_OPTIONS)
    spec.add_to_server(server, deps)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [spec.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise PortInUse(
            f"cannot listen on {host}:{port} for the {spec.name} service (port in use?); "
            f"set NOVA_{spec.name.upper()}_PORT to another port, or 0 for any free one"
        )
    await server.start()
    for name in ("", spec.full_name):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(spec=spec, server=server, health=health_servicer, port=bound)
