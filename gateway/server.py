"""`serve_gateway`: the gateway on uvicorn, inside the event loop that is already running
(the services', in `nova up`), stopped when the context exits.

uvicorn's own serve() installs SIGINT/SIGTERM handlers over the host's; the host owns
the signals here (nova drains every server on SIGTERM), so they are left alone.
"""

import asyncio
import gc
import logging
import socket
from collections.abc import AsyncIterator, Generator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import uvicorn

from gateway.app import GatewayApp, Observer, build_app
from gateway.clients import Target, open_clients
from gateway.loaders import Loaders
from gateway.settings import GatewaySettings
from interceptors.client.stack import ClientSettings


class GatewayPortInUse(OSError):
    """The gateway cannot listen where it was told to; the message names the setting."""


@dataclass(frozen=True)
class RunningGateway:
    port: int
    """The port bound (the one asked for, or the free one picked for 0)."""
    app: GatewayApp


@asynccontextmanager
async def serve_gateway(
    settings: GatewaySettings,
    targets: Mapping[str, Target],
    *,
    host: str,
    grace_seconds: float = 5.0,
    observer: Observer | None = None,
    clients: ClientSettings | None = None,
    loaders: type[Loaders] = Loaders,
    shared_port: bool = False,
) -> AsyncIterator[RunningGateway]:
    """Serves GraphQL on host:settings.port against the services `targets` name (the user
    and content services at least); on exit, in-flight requests get `grace_seconds` to
    finish. `shared_port`: one of several worker processes on the port (see bind_port).
    ``async with serve_gateway(GatewaySettings(port=0), targets, host="127.0.0.1")``
    """
    async with open_clients(targets, clients) as opened:
        app = build_app(settings, opened, observer=observer, loaders=loaders)
        listener = bind_port(host, settings.port, shared=shared_port)
        server = _EmbeddedServer(
            uvicorn.Config(
                app.asgi,
                lifespan="off",
                log_config=None,
                log_level=logging.WARNING,
                access_log=False,
                timeout_graceful_shutdown=max(1, round(grace_seconds)),
            )
        )
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        try:
            await server.wait_started(serving)
            # What start-up built (the schema, grpc, OpenTelemetry) lives as long as the
            # process: exempt from collection, every full GC no longer walks it (4% of a
            # gateway process's CPU on the feed).
            gc.freeze()
            yield RunningGateway(port=listener.getsockname()[1], app=app)
        finally:
            server.should_exit = True
            await serving
            listener.close()


class _EmbeddedServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._started = asyncio.Event()

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._started.set()

    async def wait_started(self, serving: asyncio.Task[None]) -> None:
        """Returns once listening; raises what serving raised if it ended first."""
        started = asyncio.create_task(self._started.wait())
        await asyncio.wait({started, serving}, return_when=asyncio.FIRST_COMPLETED)
        if not self._started.is_set():
            started.cancel()
            serving.result()
            raise RuntimeError("the gateway's HTTP server stopped before it started")


def bind_port(host: str, port: int, *, shared: bool = False) -> socket.socket:
    """The gateway's socket, bound (asyncio listens on it). `shared` sets SO_REUSEPORT:
    the kernel then spreads new connections over every worker process bound to the port
    (by the hash of their addresses, not by which worker woke first), and the supervisor
    holds the port with a socket of its own that never listens, so no other program can
    take it while a worker restarts. Only processes of the same user can share a port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        listener.bind((host, port))
    except OSError:
        listener.close()
        raise GatewayPortInUse(
            f"cannot listen on {host}:{port} for the GraphQL gateway (port in use?); "
            "set NOVA_GATEWAY_PORT to another port, or 0 for any free one"
        ) from None
    return listener
