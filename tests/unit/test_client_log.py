"""Client metrics and logs: calls, attempts, breaker states, and throttled failure lines."""

from __future__ import annotations

from typing import Any

import grpc
import pybreaker
import pytest
from grpc import aio
from structlog.testing import capture_logs

from interceptors.client.breaker import Breaker, BreakerSettings
from interceptors.client.call import OutgoingCall
from interceptors.client.log import AttemptLog, BreakerLog, CallLog
from tests.integration.test_client_fakes import Metrics

METHOD = "/test.Service/Get"
CALL = OutgoingCall(METHOD, b"", None, None, 1.0, (("x-request-id", "req-7"),), idempotent=True)


async def succeed(call: OutgoingCall) -> Any:
    return "ok"


async def fail(call: OutgoingCall) -> Any:
    raise aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, aio.Metadata(), aio.Metadata(), "down", None)


async def test_calls_are_timed_and_failures_logged_once_a_second() -> None:
    metrics = Metrics()
    layer = CallLog("users", metrics.meter)
    await layer(CALL, succeed)
    with capture_logs() as logs:
        for _ in range(5):
            with pytest.raises(aio.AioRpcError):
                await layer(CALL, fail)
    durations = dict(
        (point["rpc.grpc.status_code"], count)
        for point, count in metrics.points("rpc.client.call.duration")
    )
    assert durations == {grpc.StatusCode.OK.value[0]: 1, grpc.StatusCode.UNAVAILABLE.value[0]: 5}
    assert len(logs) == 1
    assert {
        "event": "call failed",
        "target": "users",
        "method": METHOD,
        "code": "UNAVAILABLE",
        "request_id": "req-7",
        "log_level": "warning",
    }.items() <= logs[0].items()


async def test_every_attempt_is_counted_by_status() -> None:
    metrics = Metrics()
    layer = AttemptLog("users", metrics.meter)
    await layer(CALL, succeed)
    with pytest.raises(aio.AioRpcError):
        await layer(CALL, fail)
    points = metrics.points("nova.client.attempts")
    assert sorted((point["rpc.grpc.status_code"], value) for point, value in points) == [
        (0, 1),
        (14, 1),
    ]
    assert {point["server.address"] for point, _ in points} == {"users"}


async def test_breaker_state_changes_are_exported_and_logged() -> None:
    metrics = Metrics()
    breaker = Breaker("users", BreakerSettings(failures=1), [BreakerLog("users", metrics.meter)])
    assert metrics.points("nova.client.breaker.state") == [({"server.address": "users"}, 0)]
    with capture_logs() as logs, pytest.raises(aio.AioRpcError):
        await breaker(CALL, fail)
    assert breaker.state == pybreaker.STATE_OPEN
    assert metrics.points("nova.client.breaker.state") == [({"server.address": "users"}, 2)]
    assert metrics.points("nova.client.breaker.transitions") == [
        ({"server.address": "users", "state": "open"}, 1)
    ]
    assert logs == [
        {
            "event": "circuit breaker state changed",
            "target": "users",
            "old": "closed",
            "new": "open",
            "consecutive_failures": 1,
            "log_level": "warning",
        }
    ]
