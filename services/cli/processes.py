"""The multi-process layouts: `nova serve gateway --workers N` (worker processes sharing
the gateway's port) and `nova up --processes` (each service, the event workers and the
gateway in processes of their own, as production runs them).

This process starts PostgreSQL and Redis when they are embedded, applies migrations once,
holds the gateway's port, and supervises `nova serve …`, `nova relay` and `nova events
consume` children (services/cli/supervisor.py), handing each the same database, Redis,
signing key and ports through NOVA_* variables.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack

import click

from gateway.server import bind_port
from services.cli.supervisor import Child, Started, Supervisor, SupervisorError
from services.registry import REGISTRY
from services.runtime.config import Config
from services.runtime.db import open_database
from services.runtime.process import database_url, migrate_services, redis_url, signing_key

READY_TIMEOUT_SECONDS = 120.0
"""A child's start: migrations are done by then, but a cold interpreter and grpc take time."""


def _echo(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


def _metrics_env(config: Config, index: int) -> dict[str, str]:
    """NOVA_METRICS_PORT for the index-th child: unset stays unset (no endpoint), 0 stays 0
    (a free port each), P becomes P + index (one port per process, from P up)."""
    if config.metrics_port is None:
        return {}
    port = config.metrics_port + index if config.metrics_port else 0
    return {"NOVA_METRICS_PORT": str(port)}


def _fixed_port(host: str, port: int) -> int:
    """`port`, or for 0 a port free now: a restarted child must come back where the
    gateway already calls it."""
    if port:
        return port
    with socket.socket() as probe:
        probe.bind((host if host != "localhost" else "127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _gateway_children(
    config: Config, workers: int, port: int, env: dict[str, str], first_index: int
) -> list[Child]:
    return [
        Child(
            name=f"gateway.{i + 1}",
            args=("serve", "gateway", "--shared-port"),
            env={**env, "NOVA_GATEWAY_PORT": str(port), **_metrics_env(config, first_index + i)},
        )
        for i in range(workers)
    ]


def _describe(started: Sequence[Started]) -> str:
    return ", ".join(f"{s.child.name} (pid {s.pid})" for s in started)


async def _until_stopped(supervisor: Supervisor) -> None:
    """Until SIGINT/SIGTERM, or a child that keeps dying (then an error)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopped = asyncio.create_task(stop.wait())
    failed = asyncio.create_task(supervisor.failed())
    await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if failed.done():
        raise SupervisorError(failed.result())
    failed.cancel()
    _echo("nova: stopping every process…")


def _supervisor(config: Config) -> Supervisor:
    return Supervisor(
        ready_timeout_seconds=READY_TIMEOUT_SECONDS,
        # A service drains (delay, then grace) before it exits; beyond that it is stuck.
        stop_timeout_seconds=config.drain_delay_seconds + config.shutdown_grace_seconds + 10,
        echo=_echo,
    )


async def serve_gateway_workers(config: Config, port: int, workers: int) -> None:
    """`nova serve gateway --workers N`: N gateway processes on one port."""
    held = bind_port(config.bind_host, port, shared=True)
    try:
        bound = int(held.getsockname()[1])
        supervisor = _supervisor(config)
        try:
            gateways = await supervisor.start(_gateway_children(config, workers, bound, {}, 0))
            url = f"http://{config.bind_host}:{bound}/graphql"
            _echo(f"nova: {'gateway':<15} {f'GraphQL, {workers} workers':<40} {url}")
            _echo(f"nova: processes: {_describe(gateways)}")
            _echo("nova: ready (Ctrl-C to stop)")
            await _until_stopped(supervisor)
        finally:
            await supervisor.stop()
    finally:
        held.close()


async def up_in_processes(config: Config, gateway_port: int, workers: int) -> None:
    """`nova up --processes`: the services, then the relay and the consumer groups, then the
    gateway workers, each in processes of their own; stopped in the reverse order."""
    async with AsyncExitStack() as stack:
        dsn = await stack.enter_async_context(database_url(config))
        redis_at = await stack.enter_async_context(redis_url(config))
        async with open_database(dsn, size=1, acquire_timeout_ms=60_000) as db:
            await migrate_services(db, REGISTRY.services.values(), REGISTRY.consumers.values())
        env = {
            "NOVA_DATABASE_URL": dsn,
            "NOVA_REDIS_URL": redis_at,
            "NOVA_AUTH_SECRET": signing_key(config, development=True),
        }
        for name in REGISTRY.services:
            port = _fixed_port(config.bind_host, config.ports[name])
            env[f"NOVA_{name.upper()}_PORT"] = str(port)
        held = bind_port(config.bind_host, gateway_port, shared=True)
        stack.callback(held.close)
        bound = int(held.getsockname()[1])
        supervisor = _supervisor(config)
        stack.push_async_callback(supervisor.stop)

        names = list(REGISTRY.services)
        services = await supervisor.start(
            [
                Child(name, ("serve", name), {**env, **_metrics_env(config, i)})
                for i, name in enumerate(names)
            ]
        )
        index = len(names)
        events = await supervisor.start(
            [
                Child("relay", ("relay",), {**env, **_metrics_env(config, index)}),
                Child("events", ("events", "consume"), {**env, **_metrics_env(config, index + 1)}),
            ]
        )
        # Development, as `nova up` in one process is, unless NOVA_GATEWAY_MODE says.
        mode = os.environ.get("NOVA_GATEWAY_MODE", "development")
        gateway_env = {**env, "NOVA_GATEWAY_MODE": mode}
        gateways = await supervisor.start(
            _gateway_children(config, workers, bound, gateway_env, index + 2)
        )
        _echo(
            "nova: database: NOVA_DATABASE_URL"
            if config.database_url
            else f"nova: database: embedded PostgreSQL in {config.data_dir / 'postgres'}"
        )
        _echo(
            "nova: redis: NOVA_REDIS_URL"
            if config.redis.url
            else f"nova: redis: embedded Redis in {config.data_dir / 'redis'}, {redis_at}"
        )
        for started in services:
            spec = REGISTRY.services[started.child.name]
            address = f"{config.bind_host}:{env[f'NOVA_{spec.name.upper()}_PORT']}"
            _echo(f"nova: {spec.name:<15} {spec.full_name:<40} {address}")
        for started in services + events + gateways:
            for line in started.banner:
                if line.startswith("nova: metrics: "):
                    _echo(f"nova: metrics of {started.child.name}: {line.split(': ', 2)[2]}")
        url = f"http://{config.bind_host}:{bound}/graphql"
        _echo(f"nova: {'gateway':<15} {'GraphQL (GraphiQL in a browser)':<40} {url}")
        _echo(f"nova: processes: {_describe(services + events + gateways)}")
        _echo("nova: ready (Ctrl-C to stop)")
        await _until_stopped(supervisor)
