"""The chain on a real server: each layer asked once per method, hooks in order around the
servicer, refusals and mapped errors seen by the layers outside them, streams wrapped; the
same with a layer whose begin awaits, outermost or innermost."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

import grpc
import pytest
from grpc import aio

from interceptors import context as rpc
from interceptors.server.call import Abort, Awaiting, Call, Method, Scope
from interceptors.server.chain import Chain
from interceptors.server.chained_server import ChainedServer
from interceptors.server.errors import ErrorMapping
from services.runtime.auth import Caller, TokenCodec, current_caller
from services.runtime.errors import STATUS_BY_ERROR, NotFound
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.server import chained_server
from services.runtime.server_layers import ServerLayers

seen: ContextVar[tuple[str, ...]] = ContextVar("seen", default=())


class Recording:
    """A layer that notes its hooks in `log`, sets `seen` for what runs inside it, and
    refuses calls sent `refuse: <its name>`."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.methods: list[str] = []

    def for_method(self, method: Method) -> Callable[[Call], _Ended]:
        self.methods.append(method.path)
        return self.begin

    def begin(self, call: Call) -> _Ended:
        self.log.append(f"begin {self.name}")
        if call.header("refuse") == self.name:
            raise Abort(grpc.StatusCode.PERMISSION_DENIED, f"{self.name} says no")
        seen.set((*seen.get(), self.name))
        return _Ended(self)


class AwaitingRecording(Recording):
    """The same layer with a begin that awaits (as a Redis or database lookup would)
    before it decides, so the chain runs it on its awaited path."""

    def for_method(self, method: Method) -> Awaiting:  # type: ignore[override]
        self.methods.append(method.path)
        return Awaiting(self.begin_later)

    async def begin_later(self, call: Call) -> Scope | None:
        await asyncio.sleep(0)
        return self.begin(call)


class _Ended:
    def __init__(self, layer: Recording) -> None:
        self.layer = layer

    def end(self, call: Call, error: BaseException | None) -> None:
        self.layer.log.append(f"end {self.layer.name} {call.status.name}")


async def echo(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
    return ",".join(seen.get()).encode() + b"|" + request


async def missing(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
    raise NotFound("no such thing")


async def count(request: bytes, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
    for n in range(3):
        yield str(n).encode()


async def write_twice(request: bytes, context: aio.ServicerContext[Any, Any]) -> None:
    for _ in range(2):
        await context.write(request)


Served = tuple[aio.Channel, list[str], list[Recording]]


@pytest.fixture(params=["synchronous layers", "inner layer awaits", "outer layer awaits"])
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """The chain in front of the handlers (ChainedServer, as the runtime installs it), with
    every begin synchronous, or one layer's awaited: every test below must see the same."""
    log: list[str] = []
    outer_kind = AwaitingRecording if request.param == "outer layer awaits" else Recording
    inner_kind = AwaitingRecording if request.param == "inner layer awaits" else Recording
    outer, inner = outer_kind("outer", log), inner_kind("inner", log)
    chain = Chain([outer, ErrorMapping(STATUS_BY_ERROR), inner])
    server = ChainedServer(chain, aio.server())
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Missing": grpc.unary_unary_rpc_method_handler(missing),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "WriteTwice": grpc.unary_stream_rpc_method_handler(write_twice),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Chain", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel, log, [outer, inner]
    await server.stop(None)


async def test_hooks_run_in_order_and_each_layer_is_asked_once_per_method(served: Served) -> None:
    channel, log, layers = served
    echo_call = channel.unary_unary("/test.Chain/Echo", None, None)
    assert [await echo_call(b"a"), await echo_call(b"b")] == [b"outer,inner|a", b"outer,inner|b"]
    assert log == ["begin outer", "begin inner", "end inner OK", "end outer OK"] * 2
    assert [layer.methods for layer in layers] == [["/test.Chain/Echo"]] * 2


async def test_a_refusal_skips_the_inner_layers_and_the_outer_ones_see_its_code(
    served: Served,
) -> None:
    channel, log, _ = served
    with pytest.raises(aio.AioRpcError) as error:
        await channel.unary_unary("/test.Chain/Echo", None, None)(
            b"", metadata=(("refuse", "inner"), ("refuse", "outer"))
        )
    # A key sent twice counts with its first value.
    assert (error.value.code(), error.value.details()) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "inner says no",
    )
    assert log == ["begin outer", "begin inner", "end outer PERMISSION_DENIED"]


async def test_a_mapped_error_is_answered_before_the_outer_layers_end(served: Served) -> None:
    channel, log, _ = served
    with pytest.raises(aio.AioRpcError) as error:
        await channel.unary_unary("/test.Chain/Missing", None, None)(b"")
    assert (error.value.code(), error.value.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "no such thing",
    )
    assert log == ["begin outer", "begin inner", "end inner UNKNOWN", "end outer NOT_FOUND"]


@pytest.mark.parametrize("method", ["Count", "WriteTwice"])
async def test_streams_end_their_layers_after_the_last_message(served: Served, method: str) -> None:
    channel, log, _ = served
    replies = [r async for r in channel.unary_stream(f"/test.Chain/{method}", None, None)(b"x")]
    assert replies == ([b"0", b"1", b"2"] if method == "Count" else [b"x", b"x"])
    assert log == ["begin outer", "begin inner", "end inner OK", "end outer OK"]


async def test_an_anonymous_call_sees_no_caller_authorization_or_request_id_of_another() -> None:
    """The request context and auth set their variables only when a call has a value; a
    call's task must still never see another call's, nor the values of the context the
    server was started in."""
    tokens = TokenCodec(secret="chain-test-" + "x" * 32, ttl=timedelta(minutes=5))
    caller = Caller(user_id=uuid.uuid4(), tenant_id=DEFAULT_TENANT_ID, handle="ada")
    token, _ = tokens.issue(caller)

    async def whoami(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        seen_caller = current_caller.get()
        return json.dumps(
            [
                None if seen_caller is None else seen_caller.handle,
                rpc.authorization.get(),
                rpc.request_id.get(),
            ]
        ).encode()

    # Values set where the server starts are what its calls' tasks would inherit.
    current_caller.set(caller)
    rpc.authorization.set("Bearer leaked")
    server = chained_server(tokens, ServerLayers())
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Who", {"Ami": grpc.unary_unary_rpc_method_handler(whoami)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    current_caller.set(None)
    rpc.authorization.set(None)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            ami = channel.unary_unary("/test.Who/Ami", None, None)
            signed = (("authorization", f"Bearer {token}"), ("x-request-id", "req-1"))
            answers = await asyncio.gather(
                *(ami(b"", metadata=signed if n % 2 else ()) for n in range(20))
            )
    finally:
        await server.stop(0)
    seen = [json.loads(answer) for answer in answers]
    assert all(who == ["ada", f"Bearer {token}", "req-1"] for who in seen[1::2])
    anonymous = seen[0::2]
    assert all(who[:2] == [None, None] for who in anonymous)
    assert len({who[2] for who in anonymous}) == 10  # each a fresh request id
