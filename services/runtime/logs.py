"""Logging of a Nova process: one JSON object per line, whoever writes it.

structlog lines (clients, the event path), standard-library records (the error mapping's
stack traces, asyncpg, grpc) and the access log's lines get the same fields, so every line
parses as JSON and has time, level, logger and event, plus the trace_id and span_id of the
span current when it was written and the request_id of the RPC being served; a line about
one request can be found from any other. Exceptions are rendered as their formatted stack
in `exception`.

Lines are rendered by orjson (structlog's documented fast path), with the time formatted
by interceptors.server.log_time (structlog's TimeStamper took as long as the rest of the line),
and are not written one system call each: on an event loop, the lines of 10 ms are written
together (LineBuffer). The access log, one line per RPC, renders its own line and writes
it to ACCESS_LINES, skipping structlog's bound logger and processor chain, which cost more
server CPU than the rest of the interceptors (`./dev bench overhead`); configure_logging
keeps that sink pointing at the buffer and the level.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
from typing import Any, BinaryIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from interceptors import context as rpc
from interceptors.server.access_log import LineSink, current_span_ids
from interceptors.server.log_time import utc_timestamp

_installed: logging.Handler | None = None
_buffer: LineBuffer | None = None
_OPTIONS = orjson.OPT_UTC_Z
"""A datetime in an event is written as 2026-11-28T12:00:00.123456Z, as the line's time."""


def _write_now(line: bytes) -> None:
    """Logging not configured (a library use, a test): stderr, as structlog would."""
    sys.stderr.buffer.write(line)
    sys.stderr.buffer.flush()


ACCESS_LINES = LineSink(_write_now)
"""Where the access log writes (interceptors.server.access_log): the buffer and level that
configure_logging last set."""


def configure_logging(
    level: str = "INFO", stream: BinaryIO | None = None, flush_seconds: float | None = None
) -> logging.Handler:
    """Sends every log line to `stream` (stderr) as JSON; returns the root handler it added.
    Lines written on an event loop wait up to `flush_seconds` (FLUSH_SECONDS) to be
    written together (LineBuffer).

    Calling it again replaces the earlier setup (only the handler it added, so handlers of
    others, such as pytest's, stay). Loggers already used keep the setup they first wrote
    with: call this before building servers.
    """
    global _installed, _buffer
    if _buffer is not None:
        _buffer.flush()
        atexit.unregister(_buffer.flush)
    _buffer = LineBuffer(
        sys.stderr.buffer if stream is None else stream,
        FLUSH_SECONDS if flush_seconds is None else flush_seconds,
    )
    threshold = logging.getLevelNamesMapping()[level.upper()]
    ACCESS_LINES.write, ACCESS_LINES.threshold = _buffer.write, threshold
    shared: list[Processor] = [
        structlog.processors.add_log_level,
        _add_time,
        _add_trace_context,
        _add_request_id,
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps, option=_OPTIONS),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=lambda *args: _buffer,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(_TextTo(_buffer))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=_dumps_text, option=_OPTIONS),
            ],
        )
    )
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
    root.addHandler(handler)
    root.setLevel(threshold)
    _installed = handler
    return handler


_running_loop = asyncio.get_running_loop
FLUSH_SECONDS = 0.01
"""How long a line written on an event loop may wait to be written with the others."""


class LineBuffer:
    """Log lines on their way to a binary stream, written together at most every 10 ms.

    A line written on an event loop waits, with the others written after it, until a timer
    of that loop fires FLUSH_SECONDS later, and one write and flush sends them all; written
    elsewhere (no running loop: startup, shutdown, another thread), a line is written at
    once, with any still waiting. One write per loop iteration was the first design: a
    server's loop turns about once per call, so it was still one system call per access
    line, and that cost 4-5 µs of server CPU per call (`./dev bench overhead`). A line
    reaches the stream within 10 ms (a person tailing a log sees no delay, and a SIGKILL
    loses at most 10 ms of lines); an orderly exit flushes what is left (atexit). One
    buffer for structlog's lines and the standard library's, so they keep their order.
    """

    def __init__(self, stream: BinaryIO, flush_seconds: float = FLUSH_SECONDS) -> None:
        self._stream = stream
        self._flush_seconds = flush_seconds
        self._pending: list[bytes] = []
        self._lock = threading.Lock()
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        atexit.register(self.flush)

    def msg(self, line: bytes) -> None:
        """structlog's logger interface: one rendered line."""
        self.write(line + b"\n")

    info = debug = warning = error = critical = exception = msg

    def write(self, data: bytes) -> None:
        # No lock here, the path of every line: list.append is atomic under the GIL, and
        # _write_pending takes only the lines it counted, so one appended meanwhile stays.
        self._pending.append(data)
        try:
            loop = _running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._scheduled_on is not loop:
            with self._lock:
                if self._scheduled_on is not loop:
                    if self._scheduled_on is not None:  # a loop that stopped before it flushed
                        self._write_pending()
                    self._scheduled_on = loop
                    loop.call_later(self._flush_seconds, self.flush)

    def flush(self) -> None:
        with self._lock:
            self._scheduled_on = None
            self._write_pending()

    def _write_pending(self) -> None:
        """Writes the lines waiting now; the caller holds the lock, so flushes never
        interleave."""
        count = len(self._pending)
        if count:
            data = b"".join(self._pending[:count])
            del self._pending[:count]
            self._stream.write(data)
            self._stream.flush()


class _TextTo:
    """The standard library's handler writes text; this encodes it onto the buffer."""

    def __init__(self, buffer: LineBuffer) -> None:
        self._buffer = buffer

    def write(self, text: str) -> None:
        self._buffer.write(text.encode())

    def flush(self) -> None:
        """The buffer flushes when its timer fires, or has already."""


def flush() -> None:
    """Writes out the lines still waiting for the buffer's timer (a reader in the same
    process, such as a test, wants them now)."""
    if _buffer is not None:
        _buffer.flush()


def _dumps_text(value: Any, **options: Any) -> str:
    return orjson.dumps(value, **options).decode()


def _add_time(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    event["time"] = utc_timestamp()
    return event


def _add_trace_context(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    trace_id, span_id = current_span_ids()
    if trace_id is not None:
        event["trace_id"], event["span_id"] = trace_id, span_id
    return event


def _add_request_id(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    request_id = rpc.request_id.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event
