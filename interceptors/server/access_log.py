"""One structured log line per RPC: who called what, how it ended and how long it took.

The line carries service, method, peer, status code, duration_ms and caller_id, and what
every line of the process carries: time (interceptors.server.log_time), level, logger, event,
request_id, and the trace_id and span_id of the call's span (Call.trace_ids; the current
span's when telemetry is off), which is why this layer sits inside the telemetry span and
the request context. Messages are never logged: they hold passwords, tokens and personal
data, and their size would make the log cost more than the call.
Server faults (INTERNAL, UNKNOWN, DATA_LOSS) are warnings; the error mapping writes their
stack on its own line.

The line is rendered here, as one dict handed to orjson, and written to the process's
LineSink (services.runtime.logs keeps it pointing at its log buffer), not through
structlog's bound logger and processor chain: on a call that does no work, that pipeline
cost more server CPU than the rest of the chain (`./dev bench overhead`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc
import orjson
from opentelemetry import trace

from interceptors import context as rpc
from interceptors.server.call import Call, Every, Method
from interceptors.server.log_time import utc_timestamp

_WARNINGS = frozenset(
    {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
)
_OK = grpc.StatusCode.OK
_INFO, _WARNING = logging.INFO, logging.WARNING
_LINE = orjson.OPT_APPEND_NEWLINE
_request_id = rpc.request_id
T = TypeVar("T")


@dataclass
class LineSink:
    """Where access lines go, as the process's logging is set up now: its writer of
    rendered lines, and the lowest level it writes (a logging level)."""

    write: Callable[[bytes], None]
    threshold: int = logging.INFO


class AccessLog(Generic[T]):
    """The layer: writes each call's line when it ends."""

    def __init__(
        self, caller: ContextVar[T | None], caller_id: Callable[[T], str], sink: LineSink
    ) -> None:
        """`caller` holds who is calling when the line is written (None: anonymous), and
        caller_id tells their id."""
        self._caller = caller
        self._caller_id = caller_id
        self._sink = sink

    def for_method(self, method: Method) -> Every:
        service, _, name = method.name.rpartition("/")
        return Every(_MethodLog(service, name, self._caller, self._caller_id, self._sink))


class _MethodLog(Generic[T]):
    """The layer's scope for every call of one method: the call carries all that differs."""

    __slots__ = ("caller", "caller_id", "method", "service", "sink")

    def __init__(
        self,
        service: str,
        method: str,
        caller: ContextVar[T | None],
        caller_id: Callable[[T], str],
        sink: LineSink,
    ) -> None:
        self.service = service
        self.method = method
        self.caller = caller
        self.caller_id = caller_id
        self.sink = sink

    def end(self, call: Call, error: BaseException | None) -> None:
        code = call.status
        # `is` first: most calls end OK, and hashing an enum runs Python code.
        if code is _OK:
            level, level_name, code_name = _INFO, "info", "OK"
        elif code in _WARNINGS:
            level, level_name, code_name = _WARNING, "warning", code.name
        else:
            level, level_name, code_name = _INFO, "info", code.name
        sink = self.sink
        if level < sink.threshold:
            return
        caller = self.caller.get()
        ids = call.trace_ids
        trace_id, span_id = ids if ids is not None else current_span_ids()
        request_id = _request_id.get()
        line = {
            "time": utc_timestamp(),
            "level": level_name,
            "logger": "nova.access",
            "event": "rpc",
            "service": self.service,
            "method": self.method,
            "peer": call.context.peer(),
            "code": code_name,
            # Truncated to the microsecond: round(x, 3) goes through decimal strings and
            # cost as much as the rest of this dict.
            "duration_ms": int(call.seconds * 1_000_000) / 1000,
            "caller_id": None if caller is None else self.caller_id(caller),
            "request_id": request_id,
            "trace_id": trace_id,
            "span_id": span_id,
        }
        # Keys without a value are left out, as on the process's other lines.
        if request_id is None:
            del line["request_id"]
        if trace_id is None:
            del line["trace_id"], line["span_id"]
        sink.write(orjson.dumps(line, repr, _LINE))


def current_span_ids() -> tuple[str | None, str | None]:
    """The current span's trace and span id as log lines write them (None, None: no span);
    for a call that has none of its own (telemetry is off), and for the process's other
    lines (services.runtime.logs)."""
    span = trace.get_current_span().get_span_context()
    if not span.is_valid:
        return None, None
    # What trace.format_trace_id and format_span_id do, without their two calls and their
    # format spec (the bytes' hex() takes half the instructions).
    return span.trace_id.to_bytes(16).hex(), span.span_id.to_bytes(8).hex()
