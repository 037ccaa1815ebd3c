"""Follows one replica's health with the standard `grpc.health.v1.Health/Watch` stream.

A draining server (services.runtime.server: NOVA_DRAIN_DELAY_SECONDS) answers NOT_SERVING
while it still serves, so that clients move away before it stops taking calls; only its
health service says so, and a Watch says it the moment it changes, at no cost while
nothing does. The Watch asks about the whole server (service ""), which every Nova server
sets.

A stream that ended after it had delivered a status (the server closed an idle one, or
its connection reached its maximum age) is opened again at once and the status stands.
One that fails before its first status says the replica cannot be reached: it is out,
and the stream is tried again on a fresh channel (a failed channel's reconnect backoff can
grow to two minutes) after a backoff, 50 ms doubling up to `retry_max_seconds`: that is
what brings a restarted replica back. A server without a health service (UNIMPLEMENTED)
counts as serving, and is not watched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

_SERVING = health_pb2.HealthCheckResponse.SERVING
_FIRST_RETRY_SECONDS = 0.05
_REFUSALS = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED})
"""The server's stream limits (interceptors.server.streams): it is up, but holds no stream
for us now; the status stands and the Watch is tried again later."""


async def watch_health(
    open_channel: Callable[[], aio.Channel],
    report: Callable[[bool], None],
    retry_max_seconds: float,
) -> None:
    """Calls `report(serving)` on every status the replica sends over channels from
    `open_channel`, and `report(False)` when it cannot be reached; runs until cancelled."""
    channel = open_channel()
    retry = _FIRST_RETRY_SECONDS
    try:
        while True:
            delivered = False
            try:
                stream = health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(service="")
                )
                async for reply in stream:
                    delivered = True
                    report(reply.status == _SERVING)
            except aio.AioRpcError as error:
                code = error.code()
                if code is grpc.StatusCode.UNIMPLEMENTED:
                    report(True)
                    return
                if not delivered and code not in _REFUSALS:
                    report(False)
            if delivered:
                retry = _FIRST_RETRY_SECONDS
                continue
            await asyncio.sleep(retry)
            retry = min(retry_max_seconds, retry * 2)
            await channel.close(None)
            channel = open_channel()
    finally:
        await channel.close(None)
