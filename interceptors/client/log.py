"""Client-side logs and metrics: calls as callers saw them, attempts, breaker states.

Metrics use only the OpenTelemetry metrics API: the process that runs the client installs
the meter provider and its exporter (the servers' Prometheus endpoint); without one, the
instruments are no-ops. Names follow OpenTelemetry's RPC conventions where there is one:

- `rpc.client.call.duration` (histogram, s): one per call as its caller saw it, retries
  and hedges included;
- `nova.client.attempts` (counter): every attempt put on the wire, so attempts minus calls
  is the load that retries and hedges added;
- `nova.client.breaker.state` (gauge: 0 closed, 1 half-open, 2 open) and
  `nova.client.breaker.transitions` (counter, by new state).

All carry `server.address` (the target); calls and attempts also `rpc.method` and
`rpc.grpc.status_code`. Logs (structlog): every breaker state change, and failed calls,
at most one line per (method, status) per second with the count of those left out, so an
outage does not write one line per failed call. Successes are counted, not logged.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pybreaker
import structlog
from grpc import aio
from opentelemetry.metrics import Meter

from interceptors.client.call import Invoke, OutgoingCall
from interceptors.context import REQUEST_ID_KEY

log = structlog.get_logger("nova.client")

Attributes = dict[str, str | int]

_STATE_VALUES = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_HALF_OPEN: 1, pybreaker.STATE_OPEN: 2}
_FAILURE_LOG_INTERVAL_SECONDS = 1.0


class _Attributes:
    """The attribute dicts of one target, built once per (method, status)."""

    def __init__(self, target: str) -> None:
        self._target = target
        self._cache: dict[tuple[str, grpc.StatusCode], Attributes] = {}

    def __call__(self, method: str, code: grpc.StatusCode) -> Attributes:
        found = self._cache.get((method, code))
        if found is None:
            found = self._cache[method, code] = {
                "server.address": self._target,
                "rpc.method": method,
                "rpc.grpc.status_code": code.value[0],
            }
        return found


class CallLog:
    def __init__(self, target: str, meter: Meter) -> None:
        self._target = target
        self._attributes = _Attributes(target)
        self._duration = meter.create_histogram(
            "rpc.client.call.duration", unit="s", description="Client calls, as callers saw them"
        )
        self._next_line: dict[tuple[str, grpc.StatusCode], float] = {}
        self._left_out: dict[tuple[str, grpc.StatusCode], int] = {}

    async def __call__(self, call: OutgoingCall, proceed: Invoke) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        try:
            response = await proceed(call)
            code = grpc.StatusCode.OK
            return response
        except aio.AioRpcError as error:
            code = error.code()
            self._log_failure(call, error)
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            elapsed = time.perf_counter() - started
            self._duration.record(elapsed, self._attributes(call.method, code))

    def _log_failure(self, call: OutgoingCall, error: aio.AioRpcError) -> None:
        key = (call.method, error.code())
        now = time.monotonic()
        if now < self._next_line.get(key, 0.0):
            self._left_out[key] = self._left_out.get(key, 0) + 1
            return
        self._next_line[key] = now + _FAILURE_LOG_INTERVAL_SECONDS
        log.warning(
            "call failed",
            target=self._target,
            method=call.method,
            code=error.code().name,
            details=error.details(),
            request_id=next((v for k, v in call.metadata if k == REQUEST_ID_KEY), None),
            similar_failures_not_logged=self._left_out.pop(key, 0),
        )


class AttemptLog:
    def __init__(self, target: str, meter: Meter) -> None:
        self._attributes = _Attributes(target)
        self._attempts = meter.create_counter(
            "nova.client.attempts", description="Attempts sent, retries and hedges included"
        )

    async def __call__(self, call: OutgoingCall, proceed: Invoke) -> Any:
        code = grpc.StatusCode.UNKNOWN
        try:
            response = await proceed(call)
            code = grpc.StatusCode.OK
            return response
        except aio.AioRpcError as error:
            code = error.code()
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # a hedge that lost, or a caller that gave up
            raise
        finally:
            self._attempts.add(1, self._attributes(call.method, code))


class BreakerLog(pybreaker.CircuitBreakerListener):
    def __init__(self, target: str, meter: Meter) -> None:
        self._target = target
        self._where = {"server.address": target}
        self._state = meter.create_gauge(
            "nova.client.breaker.state", description="0 closed, 1 half-open, 2 open"
        )
        self._transitions = meter.create_counter(
            "nova.client.breaker.transitions", description="Circuit breaker state changes"
        )
        self._state.set(_STATE_VALUES[pybreaker.STATE_CLOSED], self._where)

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        self._state.set(_STATE_VALUES[new_state.name], self._where)
        self._transitions.add(1, {**self._where, "state": new_state.name})
        write = log.warning if new_state.name == pybreaker.STATE_OPEN else log.info
        write(
            "circuit breaker state changed",
            target=self._target,
            old=old_state.name if old_state else None,
            new=new_state.name,
            consecutive_failures=cb.fail_counter,
        )
