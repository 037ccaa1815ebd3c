"""What a layer of the server chain sees of a call, and the vocabulary of its answers.

A layer (`Layer.for_method`, asked once per method) answers with a synchronous begin, an
`Every(scope)` (nothing to do at the start, one scope for every call) or an
`Awaiting(begin)`, a `Wrapping(wrap)` to see the servicer's side of a call (a stream's
messages), or None for nothing at all; a begin returns a Scope or None and may raise Abort
to refuse the call; a scope's end is told how the call ended (`Call.status`, the error) and
may raise Abort to answer it otherwise. interceptors.server.chain runs them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import grpc

from interceptors import context as rpc

if TYPE_CHECKING:
    from opentelemetry.trace import Span

received_metadata: ContextVar[tuple[tuple[str, str | bytes], ...]] = ContextVar(
    "nova_received_metadata"
)
"""The metadata of the call being served, set by the chain when grpc.aio asks it for the
call's handler (in the RPC's own task, just before it runs it), read once per call here."""

# Module constants: an enum member looked up on its class runs Python code (~1k
# instructions), and these are read on every call.
_OK, _UNKNOWN = grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN
_DEADLINE_EXCEEDED, _CANCELLED = grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED

Rejected = Callable[[str, str], None]
"""Told (reason, method path) of each call a layer refuses before any work, e.g. to count
it (the telemetry layer's rejections counter)."""


class Context(Protocol):
    """What the layers use of grpc.aio's ServicerContext, typed as it behaves.

    grpc-stubs declares `time_remaining() -> float` and `code() -> StatusCode`, but they
    return None for a call without a deadline and one whose code is not set yet.
    """

    def time_remaining(self) -> float | None: ...

    def code(self) -> grpc.StatusCode | None: ...

    def peer(self) -> str: ...

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
    ) -> NoReturn: ...

    async def write(self, message: Any) -> None: ...


def final_code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    """The status code a call ends with, as the layers around it can tell: grpc.aio says it
    only part of the time. `context.code()` holds what `abort` or `set_code` set; a call
    whose deadline expired or whose client went away ends in CancelledError with no code;
    an exception that no layer mapped reaches the client as UNKNOWN."""
    if isinstance(error, asyncio.CancelledError):
        remaining = context.time_remaining()
        if remaining is None:
            # No deadline from the client: the server's default one may have run out.
            remaining = rpc.remaining_seconds()
        expired = remaining is not None and remaining <= 0
        return _DEADLINE_EXCEEDED if expired else _CANCELLED
    code = context.code()
    if code is not None:
        return code
    return _OK if error is None else _UNKNOWN


@dataclass(frozen=True, slots=True)
class Method:
    """A served method, as a layer is told about it once."""

    path: str
    """As grpc names it: "/package.Service/Method"."""
    unary_response: bool
    """One response (unary-unary, stream-unary), not a stream of them."""
    unary_request: bool = True
    """One request (unary-unary, unary-stream), not a stream of them."""

    @property
    def streams(self) -> bool:
        """Either side streams: a call that may stay open as long as its client wants."""
        return not (self.unary_request and self.unary_response)

    @property
    def name(self) -> str:
        """OpenTelemetry's rpc.method: "package.Service/Method"."""
        return self.path.lstrip("/")


class Call:
    """One call, as its layers see it.

    What several layers need is found once, by the chain, and kept here as attributes:
    the metadata, the clock at the start and end, the status code it ends with. In the
    server each function call a layer makes costs several times its micro-benchmark (the
    grpc core and the event loop keep the CPU's caches busy), so the chain reads the clock
    twice per call, not once per layer and end.
    """

    __slots__ = (
        "context",
        "finished",
        "metadata",
        "method",
        "seconds",
        "span",
        "started",
        "status",
        "trace_ids",
    )

    finished: float
    """time.perf_counter() when the servicer or a refusing layer ended it; set, like
    `seconds` and `status`, before the first scope ends."""
    seconds: float
    """finished - started."""
    status: grpc.StatusCode
    """The code the call ends with (see final_code), as the scope being ended sees it: an
    Abort raised by an inner scope's end changes it for the outer ones."""

    def __init__(self, method: Method, context: Context) -> None:
        self.method = method
        self.context = context
        self.started = perf_counter()
        """time.perf_counter() when the call began, before the first layer's begin."""
        self.span: Span | None = None
        """The call's OpenTelemetry span, when the telemetry layer started one."""
        self.trace_ids: tuple[str, str] | None = None
        """The trace id and span id of the call's span, as log lines write them, when the
        telemetry layer started one: the access log's line would otherwise look the current
        span up through OpenTelemetry's API, which cost more than the rest of the line."""
        # Read once for every layer, from what grpc gave intercept_service in this task:
        # context.invocation_metadata() would build it again, which costs more than all the
        # layers' lookups. A key sent twice keeps its first value.
        received = received_metadata.get()
        self.metadata: dict[str, str | bytes] = dict(received)
        if len(self.metadata) != len(received):
            self.metadata = dict(reversed(received))

    def header(self, key: str) -> str | None:
        """The value of a text (not `-bin`) metadata key, lowercase, or None."""
        value = self.metadata.get(key)
        return value if isinstance(value, str) else None


class Abort(Exception):
    """Raised by a layer's hook to answer the call with this status; the chain sends it."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        trailing_metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


class Scope(Protocol):
    def end(self, call: Call, error: BaseException | None) -> None:
        """The call is ending with `error` (None: it succeeded); may raise Abort."""


Begin = Callable[[Call], Scope | None]
AsyncBegin = Callable[[Call], Awaitable[Scope | None]]


@dataclass(frozen=True, slots=True)
class Every:
    """A layer's answer to for_method when a call of the method has nothing to do at its
    start and `scope` is what every call of it ends."""

    scope: Scope


@dataclass(frozen=True, slots=True)
class Awaiting:
    """A layer's answer to for_method when its begin must await: `begin` is a coroutine
    function with a Begin's contract (it returns a Scope or None, and may raise Abort)."""

    begin: AsyncBegin


Behavior = Callable[[Any, Any], Awaitable[Any]]
"""What serves a call, as the chain runs it: a coroutine function of the request (or the
request iterator of a streaming one) and the context, returning the response (None for a
streaming response, which it writes with `context.write`)."""


@dataclass(frozen=True, slots=True)
class Wrapping:
    """A layer's answer to for_method when it must see what the servicer sees of each call,
    such as a stream's messages, which no begin or end is told of. The chain calls `wrap`
    once, with the method's behavior, and runs what it returns in its place, after every
    begin and in the call's task (an outer layer's wrapper outside an inner one's). `begin`,
    if any, runs as a synchronous begin; without one the layer costs the method's calls
    nothing but its wrapper."""

    wrap: Callable[[Behavior], Behavior]
    begin: Begin | None = None


class Layer(Protocol):
    def for_method(self, method: Method) -> Begin | Every | Awaiting | Wrapping | None:
        """What this layer does when a call of `method` begins (asked once per method);
        None: nothing, for calls of this method (the chain leaves the layer out of them)."""
