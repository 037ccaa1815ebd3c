"""Domain errors raised by services, and the one table that maps them to gRPC status codes.

    NovaError
     ├── InvalidArgument    INVALID_ARGUMENT   the request itself is wrong; fix it and resend
     ├── NotFound           NOT_FOUND          a named thing does not exist (for this tenant)
     ├── AlreadyExists      ALREADY_EXISTS     a unique thing (handle, e-mail) is taken
     ├── PermissionDenied   PERMISSION_DENIED  signed in, but not allowed to touch this
     ├── Unauthenticated    UNAUTHENTICATED    no valid token where one is needed
     └── ResourceExhausted  RESOURCE_EXHAUSTED overloaded; retry later
          └── Refused                          one caller or one method; says when to retry

Messages are shown to callers as they are, so they say what was wrong and how to fix it,
and never carry internals. The database driver's errors are in the table too, with fixed
messages (theirs may name hosts): a value PostgreSQL refuses is the request's fault
(INVALID_ARGUMENT), a lost connection or a failover is the service's state (UNAVAILABLE,
so clients may retry reads), a transaction that lost a conflict may simply run again
(ABORTED). None of them is a bug, so none is INTERNAL.
"""

import math
from collections.abc import Mapping
from typing import Literal

import asyncpg
import grpc

from interceptors.context import PUSHBACK_KEY, REFUSAL_CALLER, REFUSAL_KEY, REFUSAL_METHOD
from interceptors.server.errors import Answer


class NovaError(Exception):
    """Base of every error a caller is meant to see."""


class InvalidArgument(NovaError):
    pass


class NotFound(NovaError):
    pass


class AlreadyExists(NovaError):
    pass


class PermissionDenied(NovaError):
    pass


class Unauthenticated(NovaError):
    pass


class ResourceExhausted(NovaError):
    pass


class Refused(ResourceExhausted):
    """A refusal of one caller (over its rate limit) or of one method (its own capacity is
    full), not of the server: its trailing metadata carries the retry hint
    (`grpc-retry-pushback-ms`, so no retry layer resends it at once) and `nova-refusal`
    (so no client's circuit breaker counts it against the server)."""

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: float = 1.0,
        scope: Literal["caller", "method"] = "caller",
    ) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
        self.trailing_metadata = (
            (PUSHBACK_KEY, str(max(1, math.ceil(retry_after_seconds * 1000)))),
            (REFUSAL_KEY, REFUSAL_CALLER if scope == "caller" else REFUSAL_METHOD),
        )


_UNREACHABLE = "the database cannot be reached right now; retry with backoff"

STATUS_BY_ERROR: Mapping[type[Exception], Answer] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    asyncpg.DataError: (
        grpc.StatusCode.INVALID_ARGUMENT,
        "a value of the request cannot be stored (text with a NUL character, a number out "
        "of range); correct it and resend",
    ),
    asyncpg.PostgresConnectionError: (grpc.StatusCode.UNAVAILABLE, _UNREACHABLE),
    asyncpg.exceptions.OperatorInterventionError: (grpc.StatusCode.UNAVAILABLE, _UNREACHABLE),
    asyncpg.exceptions.InsufficientResourcesError: (grpc.StatusCode.UNAVAILABLE, _UNREACHABLE),
    ConnectionError: (grpc.StatusCode.UNAVAILABLE, _UNREACHABLE),
    asyncpg.exceptions.TransactionRollbackError: (
        grpc.StatusCode.ABORTED,
        "the change conflicted with a concurrent one and was not made; send it again",
    ),
}
