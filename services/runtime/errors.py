"""Domain errors raised by services, and the one table that maps them to gRPC status codes.

    NovaError
     ├── InvalidArgument    INVALID_ARGUMENT   the request itself is wrong; fix it and resend
     ├── NotFound           NOT_FOUND          a named thing does not exist (for this tenant)
     ├── AlreadyExists      ALREADY_EXISTS     a unique thing (handle, e-mail) is taken
     ├── PermissionDenied   PERMISSION_DENIED  signed in, but not allowed to touch this
     ├── Unauthenticated    UNAUTHENTICATED    no valid token where one is needed
     └── ResourceExhausted  RESOURCE_EXHAUSTED overloaded; retry later

Messages are shown to callers as they are, so they say what was wrong and how to fix it,
and never carry internals.
"""

from collections.abc import Mapping

import grpc


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


STATUS_BY_ERROR: Mapping[type[Exception], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
