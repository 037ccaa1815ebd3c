"""gRPC status -> GraphQL code: every status is mapped, client errors keep the service's
message, server-side failures get a fixed one; the Authorization header is read."""

import grpc
import jwt
import pytest
from graphql import GraphQLError

from gateway.auth import viewer_from_header
from gateway.errors import CODE_BY_STATUS, BackendError, Unauthenticated, format_error


def test_every_grpc_status_but_ok_has_a_graphql_code() -> None:
    assert set(CODE_BY_STATUS) == set(grpc.StatusCode) - {grpc.StatusCode.OK}


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
        (grpc.StatusCode.PERMISSION_DENIED, "FORBIDDEN"),
        (grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
        (grpc.StatusCode.INVALID_ARGUMENT, "BAD_USER_INPUT"),
        (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS"),
    ],
)
def test_client_errors_keep_the_services_message(status: grpc.StatusCode, code: str) -> None:
    error = BackendError(status, "text must be 1 to 5000 characters")
    formatted = format_error(GraphQLError("x", original_error=error, path=["post"]), False)
    assert formatted == {
        "message": "text must be 1 to 5000 characters",
        "path": ["post"],
        "extensions": {"code": code},
    }


def test_server_side_failures_hide_the_details() -> None:
    error = BackendError(grpc.StatusCode.UNAVAILABLE, "connect to 10.0.0.7:50052 failed")
    formatted = format_error(GraphQLError("x", original_error=error), False)
    assert formatted["message"] == "a backend service is unavailable; retry later"
    assert formatted["extensions"] == {"code": "UNAVAILABLE"}


def test_an_unexpected_exception_is_internal_with_a_fixed_message() -> None:
    bug = GraphQLError("x", original_error=KeyError("secret"), path=["viewer"])
    production = format_error(bug, False)
    assert production == {
        "message": "internal error",
        "path": ["viewer"],
        "extensions": {"code": "INTERNAL_SERVER_ERROR"},
    }
    assert "stacktrace" in format_error(bug, True)["extensions"]


def test_a_bearer_token_names_the_viewer_and_is_forwarded_as_sent() -> None:
    token = jwt.encode({"sub": "0193", "exp": 1}, "any key, the gateway does not check it")
    viewer = viewer_from_header(f"Bearer {token}")
    assert viewer is not None
    assert (viewer.user_id, viewer.authorization) == ("0193", f"Bearer {token}")
    assert viewer_from_header(None) is None


@pytest.mark.parametrize("header", ["Token abc", "Bearer ", "Bearer not-a-jwt"])
def test_a_header_that_is_no_bearer_token_is_unauthenticated(header: str) -> None:
    with pytest.raises(Unauthenticated):
        viewer_from_header(header)
