"""Names the tenant each call acts in, from its `x-nova-tenant` metadata.

Inside auth, since whether a caller may act in the tenant it names depends on who it is
(a token carries its tenant). What a name means, and who may use it, is the runtime's
`enter`, passed in: this layer knows no registry. `enter` sets what servicers read and
raises the runtime's domain errors (an unknown tenant, a token of another), which the
error mapping outside this layer answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from interceptors.context import TENANT_KEY
from interceptors.server.call import Abort, Awaiting, Call, Method


class Tenancy:
    """The layer. `enter(slug)` with the metadata's value, or None when there is none."""

    def __init__(self, enter: Callable[[str | None], Awaitable[None]]) -> None:
        self._enter = enter

    def for_method(self, method: Method) -> Awaiting:
        return Awaiting(self.begin)

    async def begin(self, call: Call) -> None:
        sent = call.metadata.get(TENANT_KEY)
        if sent is not None and not isinstance(sent, str):
            raise Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{TENANT_KEY} metadata is a tenant's slug, text; it came as binary",
            )
        await self._enter(sent)
