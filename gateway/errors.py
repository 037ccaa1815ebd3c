"""Errors the gateway shows to clients, the one gRPC status -> GraphQL code table, and the
formatter that puts each error's code in `extensions.code`.

    GatewayError                     message shown as is, extensions.code = its code
     ├── BadRequest                  BAD_REQUEST: the HTTP body is not a GraphQL request
     ├── BadUserInput                BAD_USER_INPUT: an argument is malformed
     ├── Unauthenticated             UNAUTHENTICATED: no valid token where one is needed
     ├── LimitExceeded               QUERY_LIMIT_EXCEEDED: names the limit and the value
     ├── PersistedQueryNotFound      PERSISTED_QUERY_NOT_FOUND: send the query text too
     ├── PersistedQueryNotInList     PERSISTED_QUERY_NOT_IN_LIST: safelist mode
     ├── NotFound                    NOT_FOUND: a key a batch RPC listed as missing
     └── BackendError                a failed RPC, coded by CODE_BY_STATUS (RATE_LIMITED for
                                     a service's refusal of this caller)

Resolvers and loaders raise these; anything else is a bug: logged with its traceback and
answered INTERNAL_SERVER_ERROR with a fixed message, never the exception text.
"""

import logging
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import grpc
from ariadne.format_error import get_formatted_error_traceback
from graphql import GraphQLError

from interceptors.client.refusal import Refusal

logger = logging.getLogger("nova.gateway")

INTERNAL = "INTERNAL_SERVER_ERROR"
RATE_LIMITED = "RATE_LIMITED"
"""A service refused this caller for its rate (too many log-ins from one address, …)."""

CODE_BY_STATUS: Mapping[grpc.StatusCode, str] = {
    grpc.StatusCode.CANCELLED: "CANCELLED",
    grpc.StatusCode.UNKNOWN: INTERNAL,
    grpc.StatusCode.INVALID_ARGUMENT: "BAD_USER_INPUT",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
    grpc.StatusCode.NOT_FOUND: "NOT_FOUND",
    grpc.StatusCode.ALREADY_EXISTS: "ALREADY_EXISTS",
    grpc.StatusCode.PERMISSION_DENIED: "FORBIDDEN",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED",
    grpc.StatusCode.FAILED_PRECONDITION: "BAD_USER_INPUT",
    grpc.StatusCode.ABORTED: "UNAVAILABLE",
    grpc.StatusCode.OUT_OF_RANGE: "BAD_USER_INPUT",
    grpc.StatusCode.UNIMPLEMENTED: INTERNAL,
    grpc.StatusCode.INTERNAL: INTERNAL,
    grpc.StatusCode.UNAVAILABLE: "UNAVAILABLE",
    grpc.StatusCode.DATA_LOSS: INTERNAL,
    grpc.StatusCode.UNAUTHENTICATED: "UNAUTHENTICATED",
}
"""Every status but OK. Services write their messages for callers, so client errors keep
them; for the rest the details may name hosts and ports, so clients get FIXED_MESSAGES."""

FIXED_MESSAGES: Mapping[str, str] = {
    INTERNAL: "internal error",
    "UNAVAILABLE": "a backend service is unavailable; retry later",
    "DEADLINE_EXCEEDED": "the request took longer than its deadline",
    "CANCELLED": "the request was cancelled",
}


class GatewayError(Exception):
    code: ClassVar[str] = INTERNAL

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = {"code": self.code, **extensions}


class BadRequest(GatewayError):
    code = "BAD_REQUEST"


class BadUserInput(GatewayError):
    code = "BAD_USER_INPUT"


class Unauthenticated(GatewayError):
    code = "UNAUTHENTICATED"


class NotFound(GatewayError):
    code = "NOT_FOUND"


class PersistedQueryNotFound(GatewayError):
    code = "PERSISTED_QUERY_NOT_FOUND"

    def __init__(self) -> None:
        # Apollo clients match this exact message to resend with the query text.
        super().__init__("PersistedQueryNotFound")


class PersistedQueryNotInList(GatewayError):
    code = "PERSISTED_QUERY_NOT_IN_LIST"


class LimitExceeded(GatewayError):
    code = "QUERY_LIMIT_EXCEEDED"

    def __init__(self, message: str, *, limit: str, value: int, maximum: int) -> None:
        super().__init__(message, limit=limit, value=value, maximum=maximum)


class RequestTooLarge(GatewayError):
    """A body over the gateway's limit, answered 413 before any of it is parsed."""

    code = "REQUEST_TOO_LARGE"

    def __init__(self, message: str, *, value: int | None, maximum: int) -> None:
        super().__init__(message, limit="maxBodyBytes", value=value, maximum=maximum)


class Overloaded(GatewayError):
    """This gateway process is executing all the requests it admits and no turn came free
    in time (gateway/admission.py): answered 503 with Retry-After."""

    code = "OVERLOADED"

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message, retryAfterSeconds=retry_after_seconds)


class BackendError(GatewayError):
    """A failed RPC; `code` is per instance, from CODE_BY_STATUS, or RATE_LIMITED for a
    refusal the service marked as this caller's. A RESOURCE_EXHAUSTED that says when to
    retry has it in extensions.retryAfterSeconds (whole seconds)."""

    def __init__(
        self, status: grpc.StatusCode, details: str, *, refusal: Refusal | None = None
    ) -> None:
        exhausted = status is grpc.StatusCode.RESOURCE_EXHAUSTED
        code = CODE_BY_STATUS.get(status, INTERNAL)
        if exhausted and refusal is not None and refusal.of_caller:
            code = RATE_LIMITED
        super().__init__(FIXED_MESSAGES.get(code, details))
        self.status = status
        self.details = details
        self.extensions["code"] = code
        if exhausted and refusal is not None and refusal.retry_after_seconds is not None:
            self.extensions["retryAfterSeconds"] = max(1, math.ceil(refusal.retry_after_seconds))


def coded(error: GraphQLError, code: str) -> GraphQLError:
    """The same error with `extensions.code` set (parse, validation and variable errors
    come from graphql-core without one)."""
    return GraphQLError(
        error.message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=error.original_error,
        extensions={**(error.extensions or {}), "code": code},
    )


def format_error(error: GraphQLError, debug: bool) -> dict[str, Any]:
    """The JSON of one error. `debug` adds the stack trace of unexpected exceptions."""
    original = error.original_error
    if isinstance(original, GatewayError):
        error = GraphQLError(
            original.message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions=original.extensions,
        )
        return dict(error.formatted)
    if error.extensions and "code" in error.extensions:
        # Coded by the pipeline: a parse, validation, variable or limit error.
        return dict(error.formatted)
    if original is None:
        # graphql-core's own execution errors (a null for a non-null field) are bugs.
        logger.error("execution error at %s: %s", error.path, error.message)
        return {**error.formatted, "extensions": {"code": INTERNAL}}
    logger.error("unexpected error at %s", error.path, exc_info=original)
    extensions: dict[str, Any] = {"code": INTERNAL}
    if debug:
        extensions["stacktrace"] = get_formatted_error_traceback(original)
    return dict(
        GraphQLError(
            FIXED_MESSAGES[INTERNAL],
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions=extensions,
        ).formatted
    )


def request_error(error: GatewayError) -> dict[str, Any]:
    """The JSON of an error that stopped the request before execution."""
    return {"message": error.message, "extensions": error.extensions}
