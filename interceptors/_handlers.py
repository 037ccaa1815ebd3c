"""Wraps a method handler of any arity so an interceptor only writes its concern.

An interceptor supplies a *scope*: an async context manager entered around the RPC's
behavior inside the RPC's own task. Context variables set in the scope are seen by the
servicer; exceptions raised by the servicer reach the scope's exit; aborting in the scope's
entry rejects the call before the servicer runs. Streaming behaviors that are async
generators are wrapped as generators, others (which write with `context.write`) as
coroutines.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

if TYPE_CHECKING:
    Scope = Callable[[aio.ServicerContext[Any, Any]], AbstractAsyncContextManager[None]]
    # grpc-stubs makes these generic; grpcio's runtime classes are not subscriptable.
    ServerInterceptor = aio.ServerInterceptor[Any, Any]
else:
    ServerInterceptor = aio.ServerInterceptor
Behavior = Callable[..., Any]


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any], scope: Scope
) -> grpc.RpcMethodHandler[Any, Any]:
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_wrap(handler.unary_unary, scope), **kwargs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_wrap(handler.unary_stream, scope), **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_wrap(handler.stream_unary, scope), **kwargs)
    assert handler.stream_stream is not None
    return grpc.stream_stream_rpc_method_handler(_wrap(handler.stream_stream, scope), **kwargs)


def _wrap(behavior: Behavior, scope: Scope) -> Behavior:
    if inspect.isasyncgenfunction(behavior):

        async def stream(
            request: Any, context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async with scope(context):
                async for response in behavior(request, context):
                    yield response

        return stream

    async def call(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        async with scope(context):
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result

    return call


def metadata_value(details: grpc.HandlerCallDetails, key: str) -> str | None:
    """The first value of a metadata key (lowercase), or None."""
    for name, value in details.invocation_metadata or ():
        if name == key:
            return value if isinstance(value, str) else value.decode()
    return None
