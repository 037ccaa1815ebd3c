"""Logging of a Nova process: one JSON object per line, whoever writes it.

structlog lines (the access log) and standard-library records (the error mapping's stack
traces, asyncpg, grpc) go through the same processors, so every line parses as JSON and has
time, level, logger and event, plus the trace_id and span_id of the span current when it was
written and the request_id of the RPC being served; a line about one request can be found
from any other. Exceptions are rendered as their formatted stack in `exception`.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

from interceptors import context as rpc

_installed: logging.Handler | None = None


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Sends every log line to `stream` (stderr) as JSON; returns the root handler it added.

    Calling it again replaces the earlier setup (only the handler it added, so handlers of
    others, such as pytest's, stay). Loggers already used keep the setup they first wrote
    with: call this before building servers.
    """
    global _installed
    stream = sys.stderr if stream is None else stream
    threshold = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
        _add_trace_context,
        _add_request_id,
    ]
    render: list[Processor] = [
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=[*shared, *render],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
    root.addHandler(handler)
    root.setLevel(threshold)
    _installed = handler
    return handler


def _add_trace_context(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event["trace_id"] = trace.format_trace_id(span.trace_id)
        event["span_id"] = trace.format_span_id(span.span_id)
    return event


def _add_request_id(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    request_id = rpc.request_id.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event
