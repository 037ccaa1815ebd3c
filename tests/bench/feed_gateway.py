"""One `./dev bench feed` variant's gateway, in a process of its own.

The gateway runs in a spawned process (harness.server_process, so nothing of the bench's
event loop is inherited), as `nova serve gateway` does, with the OpenTelemetry SDK and its
JSON log written to a file: the bench's load generator, in the parent, is then outside
every process it measures. The parent asks it over the process's pipe for what only the
gateway knows: the RPCs its clients made and its own time per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection

from hdrh.histogram import HdrHistogram

from gateway.app import GatewayApp, RequestTiming
from gateway.loaders import Loaders
from gateway.server import serve_gateway
from gateway.settings import GatewaySettings
from services.cli.gateway import gateway_targets
from services.registry import REGISTRY
from tests.bench.harness import BenchError, serve_until_terminated

_HIGHEST_MICROSECONDS = 60_000_000
_ASK_TIMEOUT_SECONDS = 30.0
ASK = "counters"
"""What the parent sends for a GatewayCounters."""


@dataclass(frozen=True)
class Variant:
    """A gateway to measure. Spawned processes receive it pickled: the settings are a
    frozen dataclass, and loaders and install must be defined at module level."""

    name: str
    settings: GatewaySettings
    loaders: type[Loaders] = Loaders
    """The class of each request's DataLoaders."""
    install: Callable[[GatewayApp], None] | None = None
    """Changes the built app before it serves (the baseline's homeFeed resolver)."""
    max_rate: float | None = None
    """Offered at most this rate, whatever --rate says."""
    capacity: bool = True
    """Measured in the closed-loop capacity runs (the N+1 variant is not: it survives
    ~5 req/s, and would only make the default run long)."""


@dataclass(frozen=True)
class GatewayJob:
    variant: Variant
    addresses: Mapping[str, str]
    """The services, by name (the gateway's targets are built in the child)."""


@dataclass(frozen=True)
class GatewayCounters:
    """What the gateway did since the parent last asked."""

    rpcs: int
    """RPCs its clients made (the counting client interceptor)."""
    requests: int
    """Requests it answered."""
    own_p50_ms: float
    own_p99_ms: float
    """Its own time per request: wall time less the time at least one of the request's
    RPCs was in flight (parse, validation, resolvers, JSON); 0 with no request."""


def serve_variant(job: GatewayJob, connection: Connection) -> None:
    """The body of a gateway process (harness.server_process's target): serves on a free
    port of 127.0.0.1, sends the port, then answers each ASK with GatewayCounters."""
    serve_until_terminated(connection.send, lambda: _serving(job, connection))


@asynccontextmanager
async def _serving(job: GatewayJob, connection: Connection) -> AsyncIterator[int]:
    variant = job.variant
    timings: list[RequestTiming] = []
    async with serve_gateway(
        variant.settings,
        gateway_targets(REGISTRY, job.addresses),
        host="127.0.0.1",
        # Requests the load generator gave up on finish by their deadline on SIGTERM.
        grace_seconds=variant.settings.request_timeout_seconds,
        observer=timings.append,
        loaders=variant.loaders,
    ) as gateway:
        if variant.install is not None:
            variant.install(gateway.app)
        counters = _Counters(gateway.app, timings)
        loop = asyncio.get_running_loop()
        fd = connection.fileno()

        def answer() -> None:
            # On the event loop, between requests: nothing changes under the count.
            try:
                connection.recv()
                connection.send(counters.since_last())
            except (EOFError, OSError):
                loop.remove_reader(fd)  # the parent is gone; SIGTERM follows

        loop.add_reader(fd, answer)
        try:
            yield gateway.port
        finally:
            loop.remove_reader(fd)


class _Counters:
    def __init__(self, app: GatewayApp, timings: list[RequestTiming]) -> None:
        self._counter = app.executor.clients.counter
        self._timings = timings
        self._rpcs = self._counter.total

    def since_last(self) -> GatewayCounters:
        own = HdrHistogram(1, _HIGHEST_MICROSECONDS, 3)
        for timing in self._timings:
            spent = timing.total_seconds - timing.backend_seconds
            own.record_value(min(max(1, round(spent * 1e6)), _HIGHEST_MICROSECONDS))
        total = self._counter.total
        counters = GatewayCounters(
            rpcs=total - self._rpcs,
            requests=len(self._timings),
            own_p50_ms=own.get_value_at_percentile(50) / 1000 if self._timings else 0.0,
            own_p99_ms=own.get_value_at_percentile(99) / 1000 if self._timings else 0.0,
        )
        self._rpcs = total
        self._timings.clear()
        return counters


async def ask(connection: Connection) -> GatewayCounters:
    """The gateway's counters since the last ask (the first ask: since it started)."""
    connection.send(ASK)
    if not await asyncio.to_thread(connection.poll, _ASK_TIMEOUT_SECONDS):
        raise BenchError(f"the gateway did not answer within {_ASK_TIMEOUT_SECONDS:g} s")
    try:
        counters = connection.recv()
    except EOFError:
        raise BenchError("the gateway process exited (its error, if any, is above)") from None
    if not isinstance(counters, GatewayCounters):
        raise BenchError(f"the gateway answered {counters!r}")
    return counters
