"""The limits on a document's text and definitions: UTF-8 bytes, tokens with comments
counted, operations, fragments, and one sign-in per mutation, each at and past its
limit."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.documents import prepare, validation_rules
from gateway.errors import LimitExceeded
from gateway.limits import check_text
from gateway.schema import Schema, build_schema
from gateway.settings import GatewaySettings

SETTINGS = GatewaySettings()
EMOJI = "\U0001f600"
SIGN_UP = 'signUp(input: {handle: "h", email: "h@example.com", password: "pw-12345678"}) { token }'
LOG_IN = 'logIn(login: "h", password: "pw-12345678") { token }'


@pytest.fixture(scope="module")
def schema() -> Schema:
    return build_schema()


def refusal(schema: Schema, query: str, settings: GatewaySettings = SETTINGS) -> dict[str, Any]:
    prepared = prepare(schema.graphql, query, settings, validation_rules(settings))
    assert prepared.document is None, prepared.errors
    [error] = prepared.errors
    assert error.extensions is not None
    return {"message": error.message, **error.extensions}


def runs(schema: Schema, query: str, settings: GatewaySettings = SETTINGS) -> None:
    prepared = prepare(schema.graphql, query, settings, validation_rules(settings))
    assert prepared.document is not None
    assert prepared.errors == (), prepared.errors


def test_comments_count_as_tokens() -> None:
    assert check_text("{ viewer { id } }", SETTINGS) == 6
    assert check_text("# one\n{ viewer { id } } # two\n# three", SETTINGS) == 9


def test_a_query_padded_with_comments_is_refused_at_the_token_limit() -> None:
    settings = GatewaySettings(max_tokens=100)
    body = "{ __typename }"  # 3 tokens
    assert check_text(body + "\n#" * 97, settings) == 100
    with pytest.raises(LimitExceeded) as raised:
        check_text(body + "\n#" * 98, settings)
    assert raised.value.extensions == {
        "code": "QUERY_LIMIT_EXCEEDED",
        "limit": "maxTokens",
        "value": 101,
        "maximum": 100,
    }
    assert "comments included" in raised.value.message


def test_the_default_token_limit_refuses_what_used_to_be_four_tokens(schema: Schema) -> None:
    # The issue's query: a few fields and thousands of comments, 4 tokens to the old count.
    query = "{ __typename " + "#\n" * 5000 + "}"
    assert refusal(schema, query)["limit"] == "maxTokens"


def test_the_length_is_counted_in_utf8_bytes_up_to_the_limit() -> None:
    settings = GatewaySettings(max_query_length=100)
    query = '{ __type(name: "' + EMOJI * 17 + '") { name } }'  # 29 + 17 x 4 bytes
    assert check_text(query + " " * 3, settings) == 11
    with pytest.raises(LimitExceeded) as raised:
        check_text(query + " " * 4, settings)
    assert len(query) + 4 == 50, "50 characters, but 101 bytes"
    assert raised.value.extensions["value"] == 101
    assert raised.value.message == (
        "the query is 101 bytes long (UTF-8); at most 100 are allowed (maxQueryLength)"
    )


def test_the_default_length_refuses_the_issues_emoji_query_and_fits_real_documents(
    schema: Schema,
) -> None:
    attack = '{ __type(name: "' + EMOJI * 90_000 + '") { name } }'
    assert refusal(schema, attack)["value"] == 29 + 360_000
    # A real client's document: the 20-post feed with comments.
    runs(
        schema,
        """query Feed($n: Int!) {
             homeFeed(first: $n) {
               edges { cursor node { id text author { handle } likeCount commentCount
                       viewerHasLiked comments(first: 3) { text author { handle } } } }
               pageInfo { hasNextPage endCursor }
             }
           }""",
    )


def test_operations_are_counted_up_to_the_limit(schema: Schema) -> None:
    settings = GatewaySettings(max_operations=3)
    three = " ".join(f"query q{i} {{ __typename }}" for i in range(3))
    runs(schema, three, settings)
    refused = refusal(schema, three + " query q3 { __typename }", settings)
    assert (refused["limit"], refused["value"], refused["maximum"]) == ("maxOperations", 4, 3)
    assert refused["message"].startswith("the document defines 4 operations; at most 3")


def test_fragments_are_counted_up_to_the_limit(schema: Schema) -> None:
    settings = GatewaySettings(max_fragments=2)
    spreads = "{ viewer { ...f0 ...f1 ...f2 } }"
    fragments = " ".join(f"fragment f{i} on User {{ id }}" for i in range(3))
    runs(schema, "{ viewer { ...f0 ...f1 } } " + fragments.rsplit(" fragment", 1)[0], settings)
    refused = refusal(schema, f"{spreads} {fragments}", settings)
    assert (refused["limit"], refused["value"], refused["maximum"]) == ("maxFragments", 3, 2)


def test_one_sign_in_per_mutation_is_allowed(schema: Schema) -> None:
    runs(schema, f"mutation {{ {SIGN_UP} }}")
    runs(schema, f"mutation {{ a: {LOG_IN} }}")
    # Two operations of one sign-in each: only one of them runs per request.
    runs(schema, f"mutation A {{ {LOG_IN} }} mutation B {{ {SIGN_UP} }}")


@pytest.mark.parametrize(
    "query",
    [
        "mutation { " + " ".join(f"a{i}: {SIGN_UP}" for i in range(25)) + " }",
        f"mutation {{ {LOG_IN} s: {SIGN_UP} }}",
        f"mutation {{ ...twice ...twice }} fragment twice on Mutation {{ {LOG_IN} }}",
        f"mutation {{ {LOG_IN} ... on Mutation {{ again: {LOG_IN} }} }}",
    ],
    ids=["25 aliased signUps", "logIn and signUp", "a fragment spread twice", "inline"],
)
def test_a_second_sign_in_in_one_mutation_is_refused(schema: Schema, query: str) -> None:
    refused = refusal(schema, query)
    assert refused["code"] == "QUERY_LIMIT_EXCEEDED"
    assert refused["limit"] == "maxSignIns"
    assert refused["maximum"] == 1
    assert "send one log-in or sign-up per request" in refused["message"]


def test_sign_ins_through_nested_fragments_are_counted_without_exponential_work(
    schema: Schema,
) -> None:
    # f0 spreads f1 twice, f1 spreads f2 twice, ...: 2**30 sign-ins, counted in 30 steps.
    chain = " ".join(f"fragment f{i} on Mutation {{ ...f{i + 1} ...f{i + 1} }}" for i in range(30))
    query = f"mutation {{ ...f0 }} {chain} fragment f30 on Mutation {{ {LOG_IN} }}"
    refused = refusal(schema, query, GatewaySettings(max_tokens=10_000))
    assert refused["value"] == 2**30
