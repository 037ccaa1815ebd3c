"""Domain errors raised by services, and the one table that maps them to gRPC status codes.

    NovaError
     ├── InvalidArgument    INVALID_ARGUMENT   the request itself is wrong; fix it and resend
     ├── NotFound           NOT_FOUND          a named thing does not exist (for this tenant)
     ├── AlreadyExists      ALREADY_EXISTS     a unique thing (handle, e-mail) is taken
     ├── PermissionDenied   PERMISSION_DENIED  signed in, but not allowed to touch this
     ├── Unauthenticated    UNAUTHENTICATED    no valid token where one is needed
     └── ResourceExhausted  RESOURCE_EXHAUSTED overloaded; retry later

Messages are shown to callers as they are, so they say what was wrong and how to fix it,
and never carry internals. The database driver's errors are in the table too, with fixed
messages (theirs may name hosts): a value PostgreSQL refuses is the request's fault
(INVALID_ARGUMENT), a lost connection or a failover is the service's state (UNAVAILABLE,
so clients may retry reads), a transaction that lost a conflict may simply run again
(ABORTED). None of them is a bug, so none is INTERNAL.
"""

from collections.abc import Mapping

import asyncpg
import grpc

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
