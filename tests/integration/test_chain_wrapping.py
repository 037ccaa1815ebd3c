"""The chain's Wrapping and None answers on a real server: wrappers run around the servicer
after every begin, the outer layer's outside, with what the servicer is given; a layer
that answers None takes no part in that method's calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio

from interceptors.server.call import Behavior, Call, Method, Wrapping
from interceptors.server.chain import Chain
from interceptors.server.chained_server import ChainedServer


class Wrapper:
    """Wraps streaming methods' behaviors, noting what it sees in `log`; begins log too.
    Answers None for unary methods."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.methods: list[Method] = []

    def for_method(self, method: Method) -> Wrapping | None:
        self.methods.append(method)
        return Wrapping(self.wrap, self.begin) if method.streams else None

    def begin(self, call: Call) -> None:
        self.log.append(f"begin {self.name}")

    def wrap(self, behavior: Behavior) -> Behavior:
        async def wrapped(request: Any, context: Any) -> Any:
            self.log.append(f"enter {self.name}")
            try:
                return await behavior(request, context)
            finally:
                self.log.append(f"leave {self.name}")

        return wrapped


async def echo(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
    return request


async def echo_all(
    requests: AsyncIterator[bytes], context: aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


Served = tuple[aio.Channel, list[str], list[Wrapper]]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    log: list[str] = []
    layers = [Wrapper("outer", log), Wrapper("inner", log)]
    server = ChainedServer(Chain(layers), aio.server())
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "EchoAll": grpc.stream_stream_rpc_method_handler(echo_all),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Wrap", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel, log, layers
    await server.stop(None)


async def test_wrappers_run_after_the_begins_outer_outside_with_the_servicers_requests(
    served: Served,
) -> None:
    channel, log, layers = served
    call = channel.stream_stream("/test.Wrap/EchoAll", None, None)
    replies = [reply async for reply in call(iter([b"a", b"b"]))]
    assert replies == [b"a", b"b"]
    assert log == [
        "begin outer",
        "begin inner",
        "enter outer",
        "enter inner",
        "leave inner",
        "leave outer",
    ]
    (method,) = layers[0].methods
    assert (method.unary_request, method.unary_response, method.streams) == (False, False, True)


async def test_a_layer_that_answers_none_takes_no_part_in_the_call(served: Served) -> None:
    channel, log, layers = served
    assert await channel.unary_unary("/test.Wrap/Echo", None, None)(b"x") == b"x"
    assert log == []
    (method,) = layers[1].methods
    assert (method.unary_request, method.unary_response, method.streams) == (True, True, False)
