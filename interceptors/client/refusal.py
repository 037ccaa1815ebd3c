"""What a server's refusal tells its client, read from the status's trailing metadata:
whether it is about one caller or one method rather than the server (`nova-refusal`), and
how long to wait before trying again (`grpc-retry-pushback-ms`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from grpc import aio

from interceptors.context import PUSHBACK_KEY, REFUSAL_CALLER, REFUSAL_KEY


@dataclass(frozen=True)
class Refusal:
    scope: str | None
    """"caller" or "method" (the server is well; this caller or method is over a limit),
    or None when the server did not say."""
    retry_after_seconds: float | None
    """The pushback, when the server sent one."""

    @property
    def of_caller(self) -> bool:
        return self.scope == REFUSAL_CALLER


def refusal_of(error: aio.AioRpcError) -> Refusal:
    """``refusal_of(error).of_caller``: what `error`'s trailing metadata says about it."""
    scope = pushback = None
    for key, value in cast(aio.Metadata | None, error.trailing_metadata()) or ():
        if key == REFUSAL_KEY and isinstance(value, str):
            scope = value
        elif key == PUSHBACK_KEY and isinstance(value, str) and value.isdigit():
            pushback = int(value) / 1000
    return Refusal(scope, pushback)


def is_scoped(error: aio.AioRpcError) -> bool:
    """Whether the server marked `error` as a refusal of one caller or one method."""
    trailing = cast(aio.Metadata | None, error.trailing_metadata())
    return any(key == REFUSAL_KEY for key, _ in trailing or ())
