"""The chain installed as a grpc.aio server interceptor, for a server that is not a
ChainedServer (one built elsewhere, with interceptors of its own).

A ChainedServer is the cheaper install: grpc.aio runs its interceptors as a pipeline of
coroutines on every call, and a server with any interceptor takes a slower path to its
handler (interceptors.chained_server). The layers see the same call either way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from interceptors.chain import Chain

if TYPE_CHECKING:
    # grpc-stubs makes these generic; grpcio's runtime classes are not subscriptable.
    ServerInterceptor = aio.ServerInterceptor[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    ServerInterceptor = aio.ServerInterceptor


class ChainInterceptor(ServerInterceptor):
    """Runs `chain` around every call the server serves."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        return self.chain.handler_for(details, await continuation(details))  # type: ignore[return-value]
