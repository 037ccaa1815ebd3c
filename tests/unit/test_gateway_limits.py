"""Every limit rejects before validation or execution, names itself and the value, and
the cost estimate uses the variables."""

from __future__ import annotations

import time
from typing import Any

import pytest
from graphql import OperationDefinitionNode, get_operation_ast
from graphql.execution.values import get_variable_values

from gateway.documents import prepare, validation_rules
from gateway.errors import BadUserInput, LimitExceeded
from gateway.limits import actual_cost, check_cost
from gateway.resolvers.feed import WORK
from gateway.schema import Schema, build_schema
from gateway.settings import GatewaySettings

SETTINGS = GatewaySettings()
FEED = """
query Feed($first: Int!, $comments: Int) {
  homeFeed(first: $first) {
    edges { node { id author { id } comments(first: $comments) { author { id } } } }
    pageInfo { hasNextPage }
  }
}"""


@pytest.fixture(scope="module")
def schema() -> Schema:
    return build_schema()


def limit_error(schema: Schema, query: str, settings: GatewaySettings = SETTINGS) -> Any:
    prepared = prepare(schema.graphql, query, settings, validation_rules(settings))
    assert prepared.document is None, prepared.errors
    [error] = prepared.errors
    return error


def cost_of(schema: Schema, query: str, variables: dict[str, Any]) -> int:
    prepared = prepare(schema.graphql, query, SETTINGS, validation_rules(SETTINGS))
    assert prepared.document is not None
    assert not prepared.errors, prepared.errors
    operation = get_operation_ast(prepared.document)
    assert isinstance(operation, OperationDefinitionNode)
    coerced = get_variable_values(schema.graphql, operation.variable_definitions or (), variables)
    assert not isinstance(coerced, list), coerced
    return check_cost(schema.graphql, prepared.document, operation, coerced, SETTINGS)


@pytest.mark.parametrize(
    "query",
    [
        "{" + " __typename" * 1000 + " }",
        "{ viewer {" + " id" * 6_000 + " } }",
    ],
    ids=["1000 __typename fields", "6000 tokens"],
)
def test_the_token_limit_rejects_a_huge_query_in_milliseconds(schema: Schema, query: str) -> None:
    started = time.perf_counter()
    error = limit_error(schema, query)
    elapsed = time.perf_counter() - started

    assert error.extensions == {
        "code": "QUERY_LIMIT_EXCEEDED",
        "limit": "maxTokens",
        "value": 1001,
        "maximum": 1000,
    }
    assert "more than 1000 tokens" in error.message
    # About 2 ms here; parsing and validating either takes 100 ms or more. The bound is
    # loose so a busy CI machine does not fail it.
    assert elapsed < 0.05


def test_the_query_length_limit_rejects_before_the_lexer(schema: Schema) -> None:
    query = "# " + "x" * 200_000 + "\n{ viewer { id } }"
    error = limit_error(schema, query)
    assert error.extensions["limit"] == "maxQueryLength"
    assert error.extensions["value"] == len(query)


def test_depth_is_counted_through_fragments(schema: Schema) -> None:
    query = """
    { post(id: "x") { comments { post { comments { ...deeper } } } } }
    fragment deeper on Comment {
      post { comments { post { comments { post { comments { id } } } } } }
    }
    """
    error = limit_error(schema, query)
    assert error.extensions == {
        "code": "QUERY_LIMIT_EXCEEDED",
        "limit": "maxDepth",
        "value": 11,
        "maximum": 10,
    }
    assert "nested 11 fields deep" in error.message


def test_a_fragment_cycle_ends_in_a_validation_error_not_endless_recursion(
    schema: Schema,
) -> None:
    query = """
    { viewer { ...a } }
    fragment a on User { id ...b }
    fragment b on User { handle ...a }
    """
    prepared = prepare(schema.graphql, query, SETTINGS, validation_rules(SETTINGS))
    assert prepared.document is not None, "it parsed and passed the depth and alias limits"
    assert prepared.errors
    assert prepared.errors[0].extensions == {"code": "GRAPHQL_VALIDATION_FAILED"}
    assert "Cannot spread fragment 'a' within itself" in prepared.errors[0].message


def test_aliases_in_a_fragment_count_once_per_spread(schema: Schema) -> None:
    aliased = " ".join(f"a{i}: id" for i in range(8))
    query = f"""
    {{ viewer {{ ...f }} u1: user(handle: "a") {{ ...f }} u2: user(handle: "b") {{ ...f }}
       u3: user(handle: "c") {{ ...f }} }}
    fragment f on User {{ {aliased} }}
    """
    error = limit_error(schema, query)
    assert error.extensions["limit"] == "maxAliases"
    assert error.extensions["value"] == 3 + 4 * 8


def test_cost_multiplies_list_sizes_taken_from_the_variables(schema: Schema) -> None:
    # homeFeed's work, homeFeed, pageInfo, and per post: edge, node, author, and per
    # comment: it, author.
    assert cost_of(schema, FEED, {"first": 20}) == WORK + 1 + 1 + 20 * (3 + 3 * 2)
    assert cost_of(schema, FEED, {"first": 30, "comments": 10}) == WORK + 2 + 30 * (3 + 10 * 2)


def test_a_cost_over_the_limit_is_rejected_with_the_estimate(schema: Schema) -> None:
    with pytest.raises(LimitExceeded) as raised:
        cost_of(schema, FEED, {"first": 100, "comments": 20})
    assert raised.value.extensions == {
        "code": "QUERY_LIMIT_EXCEEDED",
        "limit": "maxCost",
        "value": WORK + 2 + 100 * (3 + 20 * 2),
        "maximum": 2000,
    }


@pytest.mark.parametrize(
    ("variables", "field", "maximum"),
    [({"first": 101}, "Query.homeFeed", 100), ({"first": 1, "comments": 21}, "Post.comments", 20)],
)
def test_page_sizes_over_the_maximum_name_the_field_and_the_limit(
    schema: Schema, variables: dict[str, int], field: str, maximum: int
) -> None:
    with pytest.raises(LimitExceeded) as raised:
        cost_of(schema, FEED, variables)
    assert raised.value.extensions["limit"] == "maxPageSize"
    assert raised.value.extensions["maximum"] == maximum
    assert raised.value.message.startswith(f"{field}(first: ")


def test_a_page_of_nothing_is_bad_input(schema: Schema) -> None:
    with pytest.raises(BadUserInput, match=r"Query.homeFeed\(first: 0\) must ask for at least 1"):
        cost_of(schema, FEED, {"first": 0})


def test_actual_cost_counts_the_objects_in_the_response(schema: Schema) -> None:
    prepared = prepare(schema.graphql, FEED, SETTINGS, validation_rules(SETTINGS))
    assert prepared.document is not None
    operation = get_operation_ast(prepared.document)
    assert operation is not None
    comment = {"author": {"id": "c"}}
    node = {"id": "p", "author": None, "comments": [comment, comment]}
    data = {"homeFeed": {"edges": [{"node": node}], "pageInfo": {"hasNextPage": False}}}
    # homeFeed's work, homeFeed, pageInfo, edge, node, two comments with their authors;
    # no author.
    assert actual_cost(schema.graphql, prepared.document, operation, data) == (
        WORK + 1 + 1 + 1 + 1 + 2 * 2
    )


def test_introspection_is_free_of_depth_and_cost_but_off_in_production(schema: Schema) -> None:
    query = "{ __schema { types { fields { type { ofType { ofType { ofType { name } } } } } } } }"
    development = prepare(schema.graphql, query, SETTINGS, validation_rules(SETTINGS))
    assert not development.errors
    production = GatewaySettings(production=True)
    closed = prepare(schema.graphql, query, production, validation_rules(production))
    assert closed.errors
    assert all(e.extensions == {"code": "GRAPHQL_VALIDATION_FAILED"} for e in closed.errors)
    assert "introspection" in closed.errors[0].message
