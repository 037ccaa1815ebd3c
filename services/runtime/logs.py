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
import collections
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson
import structlog
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
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


MAX_BUFFER_BYTES = 8 * 1024 * 1024
"""Bytes of lines waiting to be written, at most; past it new lines are dropped (and
counted) until the reader catches up, so a stalled reader cannot fill the memory."""
FLUSH_WAIT_SECONDS = 5.0
"""How long flush() (an exit, a reader in this process) waits for a stalled reader."""


class LineBuffer:
    """Log lines on their way to a binary stream, written together at most every 10 ms, by
    a thread of their own.

    A line written on an event loop waits, with the others written after it, until a timer
    of that loop fires FLUSH_SECONDS later and hands them all to the writer thread as one
    chunk, for one write and flush; written elsewhere (no running loop: startup, shutdown,
    another thread), a line is handed over at once and waited for. One write per loop
    iteration was the first design: a server's loop turns about once per call, so it was
    still one system call per access line, and that cost 4-5 µs of server CPU per call
    (`./dev bench overhead`). The write is the thread's, not the loop's: a reader that stops
    reading (a stalled stderr pipe) stalls the thread, never the process's calls.

    What waits is bounded by `max_bytes`; past it a line is dropped and counted
    (`dropped_lines`, the metric nova.log.lines_dropped), as is a chunk the stream refused
    (a closed pipe), and once a write succeeds again one line says how many were lost. A
    line reaches the stream within 10 ms when its reader keeps up (a SIGKILL loses at most
    that); an orderly exit flushes what is left (atexit). One buffer for structlog's lines
    and the standard library's, so they keep their order.
    """

    dropped_in_process = 0
    """Lines every buffer of this process dropped (the metric)."""

    def __init__(
        self,
        stream: BinaryIO,
        flush_seconds: float = FLUSH_SECONDS,
        max_bytes: int = MAX_BUFFER_BYTES,
    ) -> None:
        self._stream = stream
        self._flush_seconds = flush_seconds
        self._max_bytes = max_bytes
        self._pending: list[bytes] = []
        self._waiting_bytes = 0
        """Of the lines pending and the chunks handed over but not yet written: approximate
        by a line or two when threads write at once, which the bound can afford."""
        self._chunks: collections.deque[bytes] = collections.deque()
        self._writing = False
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._writer: threading.Thread | None = None
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        self.dropped_lines = 0
        self.dropped_bytes = 0
        self._unreported = (0, 0)
        """Dropped lines and bytes since the last summary line."""
        atexit.register(self.flush)

    def msg(self, line: bytes) -> None:
        """structlog's logger interface: one rendered line."""
        self.write(line + b"\n")

    info = debug = warning = error = critical = exception = msg

    def write(self, data: bytes) -> None:
        # No lock here, the path of every line: list.append is atomic under the GIL, and
        # _hand_over takes only the lines it counted, so one appended meanwhile stays.
        if self._waiting_bytes + len(data) > self._max_bytes:
            self._drop(data.count(b"\n") or 1, len(data))
            return
        self._waiting_bytes += len(data)
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
                        self._hand_over()
                    self._scheduled_on = loop
                    loop.call_later(self._flush_seconds, self._on_timer)

    def flush(self) -> None:
        """Hands over what is pending and waits (up to FLUSH_WAIT_SECONDS) until the
        stream has it."""
        with self._lock:
            self._scheduled_on = None
            self._hand_over()
            self._changed.wait_for(
                lambda: not self._chunks and not self._writing, timeout=FLUSH_WAIT_SECONDS
            )

    def _on_timer(self) -> None:
        """On the loop: hand the lines over, without waiting for the stream."""
        with self._lock:
            self._scheduled_on = None
            self._hand_over()

    def _hand_over(self) -> None:
        """The lines pending now, as one chunk for the writer; the caller holds the lock."""
        count = len(self._pending)
        if count:
            self._chunks.append(b"".join(self._pending[:count]))
            del self._pending[:count]
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_chunks, name="nova-log-writer", daemon=True
                )
                self._writer.start()
            self._changed.notify_all()

    def _write_chunks(self) -> None:
        while True:
            with self._lock:
                self._changed.wait_for(lambda: bool(self._chunks))
                chunk = self._chunks.popleft()
                self._writing = True
                lost = self._unreported
                self._unreported = (0, 0)
            summary = _dropped_line(*lost) if lost[0] else b""
            try:
                self._stream.write(chunk + summary)
                self._stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: these lines are lost
                self._drop(chunk.count(b"\n"), len(chunk))
                # the summary was not written either: report those lines with the next
                self._unreported = (self._unreported[0] + lost[0], self._unreported[1] + lost[1])
            with self._lock:
                self._waiting_bytes -= len(chunk)
                self._writing = False
                self._changed.notify_all()

    def _drop(self, lines: int, size: int) -> None:
        LineBuffer.dropped_in_process += lines
        self.dropped_lines += lines
        self.dropped_bytes += size
        self._unreported = (self._unreported[0] + lines, self._unreported[1] + size)

    def _after_fork(self) -> None:
        """A forked child has no writer thread, whatever its parent had."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._writer = None
        self._writing = False


def _dropped_line(lines: int, size: int) -> bytes:
    return (
        orjson.dumps(
            {
                "time": utc_timestamp(),
                "level": "warning",
                "logger": "nova.logs",
                "event": "log lines dropped: the log's reader did not keep up",
                "lines": lines,
                "bytes": size,
            }
        )
        + b"\n"
    )


def observe_dropped_lines(meter: metrics.Meter) -> None:
    """nova.log.lines_dropped on `meter` (the scrape endpoint's): every buffer's drops."""

    def observe(options: CallbackOptions) -> Iterator[Observation]:
        yield Observation(LineBuffer.dropped_in_process)

    meter.create_observable_counter(
        "nova.log.lines_dropped",
        callbacks=[observe],
        unit="{line}",
        description="Log lines dropped because the log's reader did not keep up, or refused them",
    )


def _reset_after_fork() -> None:
    if _buffer is not None:
        _buffer._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)


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
