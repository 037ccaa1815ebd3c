"""Verifies `authorization: Bearer <token>` metadata and exposes the caller to servicers.

A call without the header runs anonymously (the contextvar holds None; each servicer
decides whether that is allowed). A call with a header that does not verify is rejected
with UNAUTHENTICATED before the servicer runs, so a typo never silently downgrades a
caller to anonymous. Innermost in the chain: a call refused by an outer layer costs no
verification.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Generic, TypeVar

import grpc

from interceptors.context import AUTHORIZATION_KEY
from interceptors.server.call import Abort, Call, Method

T = TypeVar("T")


class Auth(Generic[T]):
    """The layer. `verify` turns a token into a caller or raises `invalid` with a message
    for people."""

    def __init__(
        self,
        verify: Callable[[str], T],
        caller: ContextVar[T | None],
        invalid: type[Exception],
    ) -> None:
        self._verify = verify
        self._caller = caller
        self._invalid = invalid

    def for_method(self, method: Method) -> Callable[[Call], None]:
        return self.begin

    def begin(self, call: Call) -> None:
        header = call.metadata.get(AUTHORIZATION_KEY)
        if header is None:  # anonymous: the caller is None, as it is where the server started
            if self._caller.get() is not None:
                self._caller.set(None)
            return
        caller: T | None = None
        if isinstance(header, str):
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "authorization metadata must look like 'Bearer <token>'",
                )
            try:
                caller = self._verify(token.strip())
            except self._invalid as error:
                raise Abort(grpc.StatusCode.UNAUTHENTICATED, str(error)) from error
        # Set only when it changes: a call's task starts with the context the server started
        # in, where no caller is set, and a context variable's set costs more than its get.
        if caller is not None or self._caller.get() is not None:
            self._caller.set(caller)
