"""The standard health service (`grpc.health.v1.Health`), whose Watch streams end when
their server stops.

A server's stop waits up to its grace period for the calls in flight, and a Watch never
finishes by itself: every client that balances over replicas holds one on each
(interceptors.client.health_watch), so with grpc's own servicer each replica of a rolling
restart took the whole drain delay plus the whole grace to exit. Here `end_watches`,
just before the server stops taking calls, has every Watch send the last status (it is
NOT_SERVING since the drain began) and end with OK; a client that opens it again is
refused and counts the replica out.

The rest is grpc_health's reference servicer: statuses by service name ("" for the whole
server), NOT_FOUND from Check for a name never set, SERVICE_UNKNOWN from Watch, and a
graceful shutdown after which every status stays NOT_SERVING.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

_Status = health_pb2.HealthCheckResponse
_LAST_WRITE_SECONDS = 1.0
"""How long `end_watches` waits for a Watch to write its last status (a client that does
not read could hold it) before cancelling it."""


class Health(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self._status: dict[str, Any] = {"": _Status.SERVING}
        self._changed = asyncio.Event()
        self._shutting_down = False
        self._ending = False
        self._watches: set[asyncio.Task[Any]] = set()

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"no health status for service {request.service!r}"
            )
        return _Status(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._watches.add(task)
        last = None
        try:
            while True:
                changed = self._changed  # taken first, so no change between is missed
                status = self._status.get(request.service, _Status.SERVICE_UNKNOWN)
                if status != last:
                    await context.write(_Status(status=status))
                    last = status
                if self._ending:
                    return
                await changed.wait()
        finally:
            self._watches.discard(task)

    async def set(self, service: str, status: Any) -> None:
        """Sets a service's status; ignored once the graceful shutdown began."""
        if not self._shutting_down:
            self._status[service] = status
            self._notify()

    async def enter_graceful_shutdown(self) -> None:
        """Every status NOT_SERVING, for good."""
        self._shutting_down = True
        for service in self._status:
            self._status[service] = _Status.NOT_SERVING
        self._notify()

    async def end_watches(self) -> None:
        """Has every open Watch send its last status and end (OK)."""
        self._ending = True
        self._notify()
        watches = set(self._watches)
        if not watches:
            return
        _, stuck = await asyncio.wait(watches, timeout=_LAST_WRITE_SECONDS)
        for task in stuck:
            task.cancel()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
