"""One structured log line per RPC: who called what, how it ended and how long it took.

The line carries service, method, peer, status code, duration_ms and caller_id; the
logging setup (services.runtime.logs) adds time, level, trace_id, span_id and request_id
to it as to every line, which is why this layer sits inside the telemetry span and the
request context. Messages are never logged: they hold passwords, tokens and personal
data, and their size would make the log cost more than the call. Server faults (INTERNAL,
UNKNOWN, DATA_LOSS) are warnings; the error mapping writes their stack on its own line.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import structlog

from interceptors.chain import Call, Method

_WARNINGS = frozenset(
    {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
)
_OK = grpc.StatusCode.OK


class AccessLog:
    """The layer: times each call and writes its line when it ends."""

    def __init__(self, caller_id: Callable[[], str | None]) -> None:
        """caller_id tells who is calling, when the line is written; None for anonymous."""
        self._caller_id = caller_id

    def for_method(self, method: Method) -> Callable[[Call], _Logged]:
        service, _, name = method.name.rpartition("/")
        # Bound when the method is first called, so to the logging setup in force then, and
        # once: a line then only adds what differs from call to call.
        log: structlog.typing.FilteringBoundLogger = structlog.get_logger().bind(
            logger="nova.access", service=service, method=name
        )
        return _MethodLog(log, self._caller_id).begin


class _MethodLog:
    __slots__ = ("caller_id", "log")

    def __init__(
        self, log: structlog.typing.FilteringBoundLogger, caller_id: Callable[[], str | None]
    ) -> None:
        self.log = log
        self.caller_id = caller_id

    def begin(self, call: Call) -> _Logged:
        return _Logged(self, time.perf_counter())


class _Logged:
    """One call, timed and written down when it ends."""

    __slots__ = ("_method", "_started")

    def __init__(self, method: _MethodLog, started: float) -> None:
        self._method = method
        self._started = started

    def end(self, call: Call, error: BaseException | None) -> None:
        seconds = time.perf_counter() - self._started
        code = call.code(error)
        method = self._method
        # `is` first: most calls end OK, and hashing an enum runs Python code.
        write = method.log.info if code is _OK or code not in _WARNINGS else method.log.warning
        write(
            "rpc",
            peer=call.context.peer(),
            code=code.name,
            duration_ms=round(seconds * 1000, 3),
            caller_id=method.caller_id(),
        )
