"""Accept negotiation and the request bodies read, as the GraphQL-over-HTTP
specification and its audits (graphql/graphql-http) expect."""

import pytest

from gateway.media_types import GRAPHQL_RESPONSE, JSON, is_json_request, response_type


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, JSON),
        ("", JSON),
        ("*/*", JSON),
        ("application/*", JSON),
        ("application/json", JSON),
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        ("application/graphql-response+json, application/json;q=0.9", GRAPHQL_RESPONSE),
        ("application/json, application/graphql-response+json", GRAPHQL_RESPONSE),
        ("application/json, application/graphql-response+json;q=0.5", JSON),
        ("Application/GraphQL-Response+JSON; charset=utf-8", GRAPHQL_RESPONSE),
        ("text/html,application/xhtml+xml,*/*;q=0.8", JSON),
        ("application/graphql-response+json;q=0, */*", JSON),
        ("application/json;q=0, */*", GRAPHQL_RESPONSE),
        ("text/html", None),
        ("application/graphql-response+json;q=0", None),
        ("application/json;q=nope", None),
        ("application/json;q=nan", None),
        ("text/plain, " * 40 + "application/json", None),
    ],
)
def test_the_response_media_type_follows_accept(accept: str | None, chosen: str | None) -> None:
    assert response_type(accept) == chosen


@pytest.mark.parametrize(
    ("content_type", "read"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ('Application/JSON; charset="UTF-8"', True),
        ("application/json; charset=latin-1", False),
        ("multipart/form-data; boundary=x", False),
        ("text/plain", False),
        ("application/graphql", False),
        (None, False),
    ],
)
def test_only_json_bodies_in_utf8_are_read(content_type: str | None, read: bool) -> None:
    assert is_json_request(content_type) is read
