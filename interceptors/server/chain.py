"""The server's chain: the layers around each call, in one coroutine around the servicer.

grpc.aio awaits every interceptor's `intercept_service` on every call, and an interceptor
that wraps the method handler there builds a new handler per call and puts one more
coroutine level around the servicer: seven of them took ~40% of the throughput of a call
that does no work (`./dev bench overhead`). So each concern is a *layer* instead, a plain
object in a module of its own, asked once per method what it does on a call of that method
(`Layer.for_method`). The Chain wraps each method's handler once, keeps it, and on every
call runs the layers' hooks in one coroutine around the servicer (what a layer sees and
answers is in interceptors.server.call). A ChainedServer puts it in front of the
servicers' handlers.

- `begin(call)`, outermost layer first, in the RPC's own task before the servicer runs, so
  context variables it sets are seen by the layers inside it and by the servicer; they
  need no reset, since grpc.aio gives every call a task of its own, which ends with it.
  It returns a Scope to end, or None. Raising Abort refuses the call: the status is sent
  at once, nothing inside the layer runs, and the layers already begun end with its
  AbortError.
- `scope.end(call, error)`, innermost first, with what the call is ending with: None, the
  servicer's exception, or the AbortError of a status already sent. Raising Abort answers
  the call with that status instead (the error mapping does); the layers outside it then
  end with that AbortError.

A layer with nothing to do when a call begins, and one scope for every call of a method
(the error mapping, the access log), says so with `Every(scope)`: the chain then calls no
begin for it. A layer whose begin must await (a lookup in Redis or PostgreSQL, a remote
rate limit) says so with `Awaiting(begin)`, where begin is a coroutine function with the
same contract. Methods none of whose layers await run the synchronous path only, so an
awaiting layer costs nothing where it is not used; where one is, the begins before it
run as usual, and it and every begin after it run awaited in order, in the call's task.
A layer with nothing to do for a method answers None and takes no step in its calls. One
that must see what the servicer sees (a stream's messages, for its idle timeout) answers
`Wrapping(wrap, begin)`: `wrap` is applied once to the method's behavior, so it costs the
methods that do not use it nothing.

A streaming behavior that is an async generator is run by a coroutine that writes what it
yields with `context.write`, which grpc.aio serves the same way; others (which write with
`context.write` themselves) are wrapped like unary ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from contextlib import aclosing
from time import perf_counter
from typing import TYPE_CHECKING, Any

import grpc

from interceptors.server.call import (
    Abort,
    AsyncBegin,
    Awaiting,
    Begin,
    Call,
    Context,
    Every,
    Layer,
    Method,
    Scope,
    Wrapping,
    final_code,
    received_metadata,
)

if TYPE_CHECKING:
    # grpc-stubs makes it generic; grpcio's runtime class is not subscriptable.
    Handler = grpc.RpcMethodHandler[Any, Any]
Behavior = Callable[..., Any]

_OK = grpc.StatusCode.OK
"""A module constant: an enum member looked up on its class runs Python code."""
_INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT

_MAX_METHODS = 10_000
"""Wrapped handlers kept at most: a generic handler may serve any path a client sends."""


class Chain:
    """Runs `layers`, outermost first, around every call of the handlers it wraps."""

    def __init__(self, layers: Sequence[Layer]) -> None:
        self._layers = tuple(layers)
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}
        """By path: the handler grpc found and its wrapped twin."""

    def handler_for(
        self, details: grpc.HandlerCallDetails, handler: Handler | None
    ) -> Handler | None:
        """The handler that runs the layers around `handler`, the one grpc found for the
        call `details` describes (None: no such method). Called in the call's own task, as
        grpc.aio asks for it, by a ChainedServer's generic handler."""
        if handler is None:
            return None
        received_metadata.set(details.invocation_metadata)
        path = details.method
        known = self._wrapped.get(path)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(path, handler)
        if known is not None or len(self._wrapped) < _MAX_METHODS:
            self._wrapped[path] = (handler, wrapped)
        return wrapped

    def _wrap(self, path: str, handler: Handler) -> Handler:
        method = Method(
            path,
            unary_response=handler.unary_unary is not None or handler.stream_unary is not None,
            unary_request=handler.unary_unary is not None or handler.unary_stream is not None,
        )
        given = [layer.for_method(method) for layer in self._layers]
        wraps = tuple(answer.wrap for answer in given if isinstance(answer, Wrapping))
        answers = [begin for begin in map(_begin_of, given) if begin is not None]
        first_awaiting = next(
            (i for i, answer in enumerate(answers) if isinstance(answer, Awaiting)), len(answers)
        )
        run = _Run(
            method,
            tuple(_step(answer) for answer in answers[:first_awaiting]),
            tuple(_awaited_step(answer) for answer in answers[first_awaiting:]),
            wraps,
        )
        kwargs = {
            "request_deserializer": _parsing(handler.request_deserializer)
            if method.unary_request
            else handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(run.wrap(handler.unary_unary), **kwargs)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(run.wrap(handler.unary_stream), **kwargs)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(run.wrap(handler.stream_unary), **kwargs)
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(run.wrap(handler.stream_stream), **kwargs)


_Step = tuple[Begin | None, Scope | None]
"""A layer's part in a call of one method: its begin, or else the scope of every call."""


_AwaitedStep = tuple[Begin | None, Scope | None, AsyncBegin | None]
"""A layer's part from the first awaiting layer on: its begin, the scope of every call, or
the begin to await."""


def _begin_of(
    answer: Begin | Every | Awaiting | Wrapping | None,
) -> Begin | Every | Awaiting | None:
    """What a layer does at the start of a call (None: nothing, it takes no step)."""
    return answer.begin if isinstance(answer, Wrapping) else answer


def _step(answer: Begin | Every | Awaiting) -> _Step:
    assert not isinstance(answer, Awaiting)
    return (None, answer.scope) if isinstance(answer, Every) else (answer, None)


def _awaited_step(answer: Begin | Every | Awaiting) -> _AwaitedStep:
    if isinstance(answer, Awaiting):
        return (None, None, answer.begin)
    return (*_step(answer), None)


class _Run:
    """The layers' hooks for calls of one method, around its behavior."""

    __slots__ = ("_awaited", "_method", "_steps", "_wraps")

    def __init__(
        self,
        method: Method,
        steps: tuple[_Step, ...],
        awaited: tuple[_AwaitedStep, ...],
        wraps: tuple[Callable[[Behavior], Behavior], ...] = (),
    ) -> None:
        self._method = method
        self._steps = steps
        """The layers before the first that awaits: begun without an await."""
        self._awaited = awaited
        """That layer and those after it (none when no layer awaits)."""
        self._wraps = wraps
        """The Wrapping layers' wrappers, outermost first."""

    def wrap(self, behavior: Behavior) -> Behavior:
        if inspect.isasyncgenfunction(behavior):
            behavior = _written(behavior)
        elif not inspect.iscoroutinefunction(behavior):
            behavior = _awaitable(behavior)
        for wrap in reversed(self._wraps):
            behavior = wrap(behavior)
        method, steps, awaited = self._method, self._steps, self._awaited

        async def run(request: Any, context: Context) -> Any:
            call = Call(method, context)
            scopes: list[Scope] = []
            error: BaseException | None = None
            result = None
            try:
                _begin_all(steps, call, scopes)
                if awaited:  # a tuple's truth: the synchronous path pays no more
                    await _begin_awaited(awaited, call, scopes)
                if request.__class__ is Unparsed:
                    raise Abort(_INVALID_ARGUMENT, request.details)
                result = await behavior(request, context)
            except BaseException as raised:
                error = raised
            error = _finish(call, scopes, error)
            while isinstance(error, Abort):
                error = _end(call, scopes, await _answer(context, error))
            if error is not None:
                raise error
            return result

        return run


async def _begin_awaited(
    awaited: tuple[_AwaitedStep, ...], call: Call, scopes: list[Scope]
) -> None:
    """The begins from the first awaiting layer on, in order, awaiting those that await."""
    for begin, every, awaiting in awaited:
        if awaiting is not None:
            scope = await awaiting(call)
        else:
            scope = every if begin is None else begin(call)
        if scope is not None:
            scopes.append(scope)


def _begin_all(steps: tuple[_Step, ...], call: Call, scopes: list[Scope]) -> None:
    for begin, every in steps:
        scope = every if begin is None else begin(call)
        if scope is not None:
            scopes.append(scope)


def _finish(call: Call, scopes: list[Scope], error: BaseException | None) -> BaseException | None:
    """Stops the call's clock, then ends its scopes (see _end)."""
    call.finished = finished = perf_counter()
    call.seconds = finished - call.started
    return _end(call, scopes, error)


def _end(call: Call, scopes: list[Scope], error: BaseException | None) -> BaseException | None:
    """Ends the begun scopes, innermost first, until one raises Abort: returns that, to be
    answered before the others end, or else what the call ends with. An Abort passed in
    is returned at once, for the same reason."""
    if isinstance(error, Abort):
        return error
    if error is None:  # final_code's answer for most calls, without calling it
        code = call.context.code()
        call.status = _OK if code is None else code
    else:
        call.status = final_code(call.context, error)
    coded = error
    while scopes:
        if error is not coded:  # an inner scope's end raised
            call.status = final_code(call.context, error)
            coded = error
        try:
            scopes.pop().end(call, error)
        except BaseException as raised:
            if isinstance(raised, Abort):
                return raised
            error = raised
    return error


async def _answer(context: Context, abort: Abort) -> BaseException:
    """Sends the status; returns the exception the call goes on ending with (AbortError)."""
    try:
        await context.abort(abort.code, abort.details, abort.trailing_metadata)
    except BaseException as answered:
        return answered


class Unparsed:
    """A unary request whose body does not parse, as the chain's deserializer hands it over
    instead of raising: grpc.aio parses a request before any layer runs, and answers the
    parser's exception with UNKNOWN and its text, past the access log and the metrics.
    The chain answers it INVALID_ARGUMENT instead, inside every layer, as it would any
    request the servicer refused. (A streaming request's messages are parsed as the
    servicer reads them, past this: unary requests only.)"""

    __slots__ = ("details",)

    def __init__(self, details: str) -> None:
        self.details = details


def _parsing(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer`, returning Unparsed for a body it refuses."""
    if deserializer is None:
        return None

    def parse(body: bytes) -> Any:
        try:
            return deserializer(body)
        except Exception as error:  # protobuf's DecodeError: the body, not the server
            return Unparsed(
                f"the request is not a valid message of this method's type ({error}); "
                "send it as its generated code encodes it, with text in UTF-8"
            )

    return parse


def _written(behavior: Behavior) -> Behavior:
    """An async generator behavior as a coroutine that writes what it yields."""

    async def write(request: Any, context: Context) -> None:
        async with aclosing(behavior(request, context)) as responses:
            async for response in responses:
                await context.write(response)

    return write


def _awaitable(behavior: Behavior) -> Behavior:
    """A behavior that is no coroutine function (a callable object, a sync function) run on
    the event loop like one, its result awaited when it is awaitable."""

    async def call(request: Any, context: Context) -> Any:
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return call
