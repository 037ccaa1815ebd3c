"""The process's OpenTelemetry SDK, behind the API calls of the interceptors and the pool.

Interceptors and services.runtime.db only use the OpenTelemetry API, which does nothing
until a provider is installed; this module installs them once per process. Metrics are
read by Prometheus over HTTP from a scrape endpoint of the process's own (prometheus_client's
server on a registry of its own, so nothing else registered globally leaks into it). The
one exception to the API is the server's per-call duration histogram, which is a
prometheus_client histogram for speed (interceptors.server.telemetry): the endpoint's registry
collects it beside what the SDK exports.

No span exporter is configured yet, so the process records no spans: its tracer provider
(interceptors.server.ids_only_tracer) gives every span real trace and span ids, which log
lines carry and the client side passes downstream, and nothing else. Exporting traces means
installing the SDK's TracerProvider here, with a span processor and a sampler.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, start_http_server

from interceptors.server.ids_only_tracer import IdsOnlyTracerProvider
from interceptors.server.telemetry import CALL_DURATION
from services.runtime.logs import observe_dropped_lines


@dataclass(frozen=True)
class MetricsEndpoint:
    port: int
    """The port it listens on (the one asked for, or the free one picked for 0)."""
    meter_provider: MeterProvider


@contextmanager
def prometheus_endpoint(
    host: str, port: int, resource: Resource | None = None
) -> Iterator[MetricsEndpoint]:
    """A meter provider whose metrics are served at http://host:port/metrics."""
    registry = CollectorRegistry()
    registry.register(CALL_DURATION)
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader(registry=registry)],
        resource=resource if resource is not None else Resource.create(),
    )
    observe_dropped_lines(provider.get_meter("nova.logs"))
    server, thread = start_http_server(port, addr=host, registry=registry)
    try:
        yield MetricsEndpoint(port=server.server_port, meter_provider=provider)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        provider.shutdown()


@contextmanager
def process_telemetry(
    service_name: str, *, metrics_host: str, metrics_port: int | None
) -> Iterator[int | None]:
    """Installs the global tracer and meter providers, once per process.

    With metrics_port None there is no scrape endpoint (metrics cost nothing); 0 picks a
    free port. Yields the port the endpoint listens on, or None.
    """
    resource = Resource.create({"service.name": service_name})
    trace.set_tracer_provider(IdsOnlyTracerProvider())
    if metrics_port is None:
        yield None
        return
    with prometheus_endpoint(metrics_host, metrics_port, resource) as endpoint:
        metrics.set_meter_provider(endpoint.meter_provider)
        yield endpoint.port
