"""Starts one service as a grpc.aio server with reflection, health and the interceptors.

Health reports SERVING once the server is up (migrations have run before it starts) and
NOT_SERVING as soon as draining begins, so load balancers stop sending before the grace
period ends.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import metrics, trace

from interceptors.server.access_log import AccessLog
from interceptors.server.auth import Auth
from interceptors.server.backpressure import Backpressure
from interceptors.server.call import Layer
from interceptors.server.chain import Chain
from interceptors.server.chained_server import ChainedServer
from interceptors.server.deadlines import Deadlines
from interceptors.server.errors import ErrorMapping
from interceptors.server.propagated import Propagated
from interceptors.server.streams import Streams
from interceptors.server.telemetry import RpcMetrics, Telemetry
from interceptors.server.tenant import Tenancy
from services.runtime.auth import Caller, TokenCodec, current_admin, current_caller
from services.runtime.errors import STATUS_BY_ERROR, Unauthenticated
from services.runtime.health import Health
from services.runtime.logs import ACCESS_LINES
from services.runtime.server_layers import DEFAULT_LAYERS, ServerLayers
from services.runtime.spec import Closer, Dependencies, ServiceSpec
from services.runtime.tenancy.current import TenantEntry
from services.runtime.tenancy.directory import TenantDirectory
from services.runtime.tls import ServerTls, is_loopback

_log = structlog.get_logger("nova.server")

_OPTIONS = [
    # Without this, grpc sets SO_REUSEPORT and a second Nova on the same port would
    # silently share it instead of failing to start.
    ("grpc.so_reuseport", 0),
    # Clients that do not rotate their channels still spread over new replicas (gRPC
    # jitters the age by ±10%). It also bounds a stream's life: past the grace the
    # connection closes with whatever it still holds. Nova's client pool renews its
    # channels sooner (PoolSettings.max_age_seconds, 240 s at most) and drains a retired
    # one for at most 30 s, within the grace, so no call of its own is cut off.
    ("grpc.max_connection_age_ms", 300_000),
    ("grpc.max_connection_age_grace_ms", 30_000),
    # A connection with no call for 2 minutes is closed: each holds a socket and buffers,
    # and clients could open them by the thousand. A client's channel reconnects on its
    # next call, so only one quiet for that long pays a handshake.
    ("grpc.max_connection_idle_ms", 120_000),
    # A connection silent for 60 s is pinged, and closed without an answer in 20 s: a
    # client that vanished without closing (a crashed host, a cut network) would otherwise
    # keep its streams, and their places in the stream limits, until the connection's age.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    # Keep pinging while a stream sits idle: by default gRPC stops after two pings
    # without data, just when an idle Watch's peer is the one to check.
    ("grpc.http2.max_pings_without_data", 0),
    # Clients may ping too (their own keepalive), with or without calls, but at most every
    # 30 s; a client pinging faster is sent GOAWAY after two strikes (gRPC's default), so
    # pings cannot be a flood of their own.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 30_000),
]


def server_options(layers: ServerLayers) -> list[tuple[str, Any]]:
    """_OPTIONS and the HTTP/2 stream limit per connection, which is configured with the
    stream layer's limits it must exceed (ServerLayers.max_concurrent_streams)."""
    return [*_OPTIONS, ("grpc.max_concurrent_streams", layers.max_concurrent_streams)]


class PortInUse(OSError):
    """A server cannot listen where it was told to; the message names the setting."""


def chained_server(
    tokens: TokenCodec,
    layers: ServerLayers = DEFAULT_LAYERS,
    *,
    options: Sequence[tuple[str, Any]] = (),
    tenants: TenantDirectory | None = None,
    admin: bool = False,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> ChainedServer:
    """A grpc.aio server that runs the chain around every servicer added to it, in front of
    their handlers rather than as a grpc.aio interceptor, which costs more per call
    (interceptors.server.chained_server)."""
    chain = build_chain(
        tokens,
        layers,
        tenants=tenants,
        admin=admin,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    return ChainedServer(chain, aio.server(options=options))


def build_chain(
    tokens: TokenCodec,
    layers: ServerLayers = DEFAULT_LAYERS,
    *,
    tenants: TenantDirectory | None = None,
    admin: bool = False,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> Chain:
    """The server chain, running these layers, outermost first (providers: the process's
    unless given; `tenants`: the registry's, else only the default tenant is known). One
    chain, not one grpc.aio interceptor per layer: grpc.aio awaits each interceptor and
    rebuilds the handler on every call (see interceptors.server.chain).

    1. Telemetry: its span is current for every later layer, so their log lines carry its
       trace id, and its duration covers refused calls too.
    2. Propagated: the request id and authorization header, for all that follows (and for
       calls made downstream); a call sent without a request id takes its trace id as one.
    3. Access log: inside the span and the request context, so its line has their ids; it
       sees every call, refused ones included.
    4. Deadlines, before backpressure: a call refused for its deadline takes no slot and
       feeds the adaptive limit no sample.
    5. Backpressure: refuses a unary call before any work is done.
    6. Streams, the same for streaming calls (each call meets one of the two): their own
       limits per connection and per server, so idle watches never hold unary slots; its
       idle timeout wraps the servicer, the one place that sees the stream's messages.
    7. Error mapping, around the servicer: every layer above sees a status code (not a
       domain exception), and the stack of an unexpected error is logged inside the span.
       The layers above raise nothing but aborts, so nothing escapes it unmapped.
    8. Auth: it verifies a token only once the layers above have admitted the call, and
       sets the caller for the servicer (the access log reads it at the end).
    9. Tenancy, innermost: the tenant the call names (x-nova-tenant), checked against the
       caller's token, becomes current for the servicer.

    An `admin` server (the tenant service's) verifies admin tokens instead of users', and
    acts in no tenant.
    """
    rpc_metrics = (
        RpcMetrics(metrics.get_meter("nova.server", meter_provider=meter_provider))
        if layers.telemetry
        else None
    )
    rejected = rpc_metrics.rejected if rpc_metrics else _not_counted
    built: list[Layer | None] = [
        Telemetry(trace.get_tracer("nova.server", tracer_provider=tracer_provider), rpc_metrics)
        if rpc_metrics
        else None,
        Propagated() if layers.propagated else None,
        AccessLog(current_caller, _caller_id, ACCESS_LINES) if layers.access_log else None,
        Deadlines(layers.deadlines, rejected) if layers.deadlines else None,
        Backpressure(layers.backpressure, rejected) if layers.backpressure else None,
        Streams(layers.streams, rejected) if layers.streams else None,
        ErrorMapping(STATUS_BY_ERROR),
        Auth(tokens.verify_admin, current_admin, Unauthenticated)
        if admin
        else Auth(tokens.verify, current_caller, Unauthenticated),
        None
        if admin
        else Tenancy(TenantEntry(tenants if tenants is not None else TenantDirectory(None))),
    ]
    return Chain([layer for layer in built if layer is not None])


def _caller_id(caller: Caller) -> str:
    return str(caller.user_id)


def _not_counted(reason: str, method: str) -> None:
    """Refusals go uncounted when telemetry is off."""


def freeze_startup_heap() -> None:
    """Exempts everything built so far from garbage collection, once a server is up.

    A server's heap is mostly what start-up made (modules, grpc, OpenTelemetry, pools),
    and every full collection walked all of it: pauses of 10-30 ms that showed as the p99
    of refused calls in `./dev bench overload` (13 ms, 3 ms once frozen). What start-up
    made lives as long as the process anyway.
    """
    gc.freeze()


@dataclass
class RunningServer:
    spec: ServiceSpec
    server: aio.Server
    health: Health
    port: int
    close: Closer | None = None
    """The service's background work, finished after the last call (add_to_server's)."""

    async def drain(self) -> None:
        """Health turns NOT_SERVING (every service name); calls are still served."""
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace_seconds: float) -> None:
        """Drains, then stops taking calls; those in flight get `grace_seconds`, and so
        does the background work they left (cancelled after it)."""
        await self.drain()
        await self.health.end_watches()
        await self.server.stop(grace_seconds)
        if self.close is not None:
            try:
                await asyncio.wait_for(self.close(), timeout=max(grace_seconds, 0.1))
            except TimeoutError:
                _log.warning(
                    "background work cut short at shutdown",
                    service=self.spec.name,
                    grace_seconds=grace_seconds,
                )


async def start_server(
    spec: ServiceSpec,
    deps: Dependencies,
    *,
    host: str,
    port: int,
    layers: ServerLayers = DEFAULT_LAYERS,
    tls: ServerTls | None = None,
) -> RunningServer:
    """Serves `spec` on host:port (0: a free one), over TLS when `tls` is given (reflection
    and health too: they share the port), in plaintext otherwise."""
    server = chained_server(
        deps.tokens,
        layers,
        options=server_options(layers),
        tenants=deps.tenants,
        admin=spec.admin,
    )
    close = spec.add_to_server(server, deps)
    health_servicer = Health()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [spec.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    address = f"{host}:{port}"
    try:
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, tls.credentials())
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise PortInUse(
            f"cannot listen on {host}:{port} for the {spec.name} service (port in use?); "
            f"set NOVA_{spec.name.upper()}_PORT to another port, or 0 for any free one"
        )
    if tls is None and not is_loopback(host):
        # Tokens would cross the network readable by anyone on the path.
        _log.warning(
            "serving in plaintext beyond this machine; set NOVA_TLS_CERT_FILE and "
            "NOVA_TLS_KEY_FILE",
            service=spec.name,
            address=f"{host}:{bound}",
        )
    await server.start()
    freeze_startup_heap()
    for name in ("", spec.full_name):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(spec=spec, server=server, health=health_servicer, port=bound, close=close)
