"""One structured log line per RPC: who called what, how it ended and how long it took.

The line carries service, method, peer, status code, duration_ms and caller_id, and the
trace_id and span_id of the call's span (Call.trace_ids); the process's log writer
(services.runtime.logs.write_event) adds time, level and request_id to it as to every
line (and the current span's ids, when telemetry is off), which is why this layer sits
inside the telemetry span and the request context. Messages are never logged: they hold
passwords, tokens and personal data, and their size would make the log cost more than
the call.
Server faults (INTERNAL, UNKNOWN, DATA_LOSS) are warnings; the error mapping writes their
stack on its own line.

The line does not go through structlog's bound logger and processor chain: on a call
that does no work, that pipeline cost more server CPU than the rest of the chain
(`nova bench overhead`), so the writer takes the event as a plain dict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

import grpc

from interceptors.chain import Call, Every, Method

_WARNINGS = frozenset(
    {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
)
_OK = grpc.StatusCode.OK
_INFO, _WARNING = logging.INFO, logging.WARNING
T = TypeVar("T")

WriteEvent = Callable[[int, dict[str, Any]], None]
"""Writes one log line: (logging level, the event's fields)."""


class AccessLog(Generic[T]):
    """The layer: times each call and writes its line when it ends."""

    def __init__(
        self, caller: ContextVar[T | None], caller_id: Callable[[T], str], write: WriteEvent
    ) -> None:
        """`caller` holds who is calling when the line is written (None: anonymous), and
        caller_id tells their id."""
        self._caller = caller
        self._caller_id = caller_id
        self._write = write

    def for_method(self, method: Method) -> Every:
        service, _, name = method.name.rpartition("/")
        return Every(_MethodLog(service, name, self._caller, self._caller_id, self._write))


class _MethodLog(Generic[T]):
    """The layer's scope for every call of one method: the call carries all that differs."""

    __slots__ = ("caller", "caller_id", "method", "service", "write")

    def __init__(
        self,
        service: str,
        method: str,
        caller: ContextVar[T | None],
        caller_id: Callable[[T], str],
        write: WriteEvent,
    ) -> None:
        self.service = service
        self.method = method
        self.caller = caller
        self.caller_id = caller_id
        self.write = write

    def end(self, call: Call, error: BaseException | None) -> None:
        code = call.status
        # `is` first: most calls end OK, and hashing an enum runs Python code.
        level = _INFO if code is _OK or code not in _WARNINGS else _WARNING
        caller = self.caller.get()
        event = {
            "event": "rpc",
            "logger": "nova.access",
            "service": self.service,
            "method": self.method,
            "peer": call.context.peer(),
            "code": "OK" if code is _OK else code.name,  # .name is a Python property
            # Truncated to the microsecond: round(x, 3) goes through decimal strings and
            # cost as much as the rest of this dict.
            "duration_ms": int(call.seconds * 1_000_000) / 1000,
            "caller_id": None if caller is None else self.caller_id(caller),
        }
        if call.trace_ids is not None:
            event["trace_id"], event["span_id"] = call.trace_ids
        self.write(level, event)
