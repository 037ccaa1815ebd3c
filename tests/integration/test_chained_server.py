"""ChainedServer: every method a servicer adds runs behind the chain, found as grpc finds it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from grpc import aio

from interceptors.server.call import Call, Method
from interceptors.server.chain import Chain
from interceptors.server.chained_server import ChainedServer


class Noting:
    """A layer that notes each call's path and first metadata value of `x-note`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def for_method(self, method: Method) -> Callable[[Call], None]:
        def begin(call: Call) -> None:
            self.calls.append((method.path, call.header("x-note")))

        return begin


def answering(text: bytes) -> grpc.RpcMethodHandler[Any, Any]:
    async def behavior(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        return text + request

    return grpc.unary_unary_rpc_method_handler(behavior)


@pytest.fixture
async def served() -> AsyncIterator[tuple[aio.Channel, Noting]]:
    layer = Noting()
    server = ChainedServer(Chain([layer]), aio.server())
    # As generated code adds a service: a generic handler, and the same methods registered.
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.A", {"Echo": answering(b"generic:")})]
    )
    server.add_registered_method_handlers("test.A", {"Echo": answering(b"registered:")})
    # A second service, only as a generic handler, added later.
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.B", {"Echo": answering(b"b:")})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel, layer
    await server.stop(None)


async def test_every_method_runs_behind_the_chain_registered_ones_first(
    served: tuple[aio.Channel, Noting],
) -> None:
    channel, layer = served
    a = channel.unary_unary("/test.A/Echo", None, None)
    b = channel.unary_unary("/test.B/Echo", None, None)
    assert await a(b"1", metadata=(("x-note", "one"),)) == b"registered:1"
    assert await b(b"2", metadata=(("x-note", "two"),)) == b"b:2"
    assert await a(b"3") == b"registered:3"
    assert layer.calls == [("/test.A/Echo", "one"), ("/test.B/Echo", "two"), ("/test.A/Echo", None)]


async def test_an_unknown_method_is_unimplemented_and_reaches_no_layer(
    served: tuple[aio.Channel, Noting],
) -> None:
    channel, layer = served
    with pytest.raises(aio.AioRpcError) as error:
        await channel.unary_unary("/test.A/Nope", None, None)(b"")
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert layer.calls == []
