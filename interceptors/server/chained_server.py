"""A grpc.aio server whose every method runs behind a Chain, installed in front of
the servicers' handlers instead of in grpc.aio's interceptor pipeline.

grpc.aio runs its interceptors as a pipeline of coroutines on every call (one for each
interceptor and one for the end of the pipeline, each awaited through a functools.partial),
and a server with any interceptor at all takes a slower path to its handler than one
without: on the cheapest RPC the same chain cost 21-23k more CPU instructions per call that
way (tests/bench/overhead_instructions.py), a quarter of all it costs. Here the server has
no interceptor. The servicers' handlers are kept by this wrapper instead of being given to
the server, and the server gets one generic handler, which finds the servicer's handler
as grpc would (registered methods first, then the generic handlers in the order they were
added) and returns the chain's handler for it (Chain.handler_for). grpc.aio asks
a generic handler for a call's handler in the call's own task, exactly where it runs
interceptors, so the layers see the same call in the same context either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from interceptors.server.chain import Chain

if TYPE_CHECKING:
    # grpc-stubs makes these generic; grpcio's runtime classes are not subscriptable.
    Handler = grpc.RpcMethodHandler[Any, Any]
    GenericHandler = grpc.GenericRpcHandler[Any, Any]
else:
    GenericHandler = grpc.GenericRpcHandler


class ChainedServer(aio.Server):
    """`server`, with `chain` around every method servicers add to it through this object.

    Everything else (ports, start, stop) is the server's own. A handler added to `server`
    directly would bypass the chain, so add servicers here only.
    """

    def __init__(self, chain: Chain, server: aio.Server) -> None:
        self._server = server
        self._registered: dict[str, Handler] = {}
        """By path ("/package.Service/Method"), as add_registered_method_handlers gave them."""
        self._generic: list[GenericHandler] = []
        server.add_generic_rpc_handlers((_Front(chain, self._registered, self._generic),))

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[GenericHandler]) -> None:
        self._generic.extend(generic_rpc_handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, Handler]
    ) -> None:
        """Methods known before the server starts, which grpc prefers to generic handlers
        for the same path (generated code adds each service both ways)."""
        for method, handler in method_handlers.items():
            self._registered[f"/{service_name}/{method}"] = handler

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._server.add_secure_port(address, server_credentials)

    async def start(self) -> None:
        await self._server.start()

    async def stop(self, grace: float | None = None) -> None:
        await self._server.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (aio.Server's signature)
        return await self._server.wait_for_termination(timeout)


class _Front(GenericHandler):
    """The server's one generic handler: the servicers' handler for a call, behind the chain."""

    def __init__(
        self,
        chain: Chain,
        registered: Mapping[str, Handler],
        generic: list[GenericHandler],
    ) -> None:
        self._handler_for = chain.handler_for
        self._registered = registered
        self._generic = generic

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self._registered.get(handler_call_details.method)
        if handler is None:
            for generic in self._generic:
                handler = generic.service(handler_call_details)
                if handler is not None:
                    break
        return self._handler_for(handler_call_details, handler)
