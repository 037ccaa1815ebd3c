"""The cost model charges a field's backend work, not only its objects: aliased home feeds
are refused before execution, while the app's real feed queries fit the default maxCost."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import OperationDefinitionNode, get_operation_ast
from graphql.execution.values import get_variable_values

from gateway.documents import prepare, validation_rules
from gateway.errors import BadUserInput, LimitExceeded
from gateway.limits import FIELD_WEIGHTS, actual_cost, check_cost
from gateway.resolvers.analytics import TRENDING_WORK
from gateway.resolvers.feed import PULL_AUTHORS, WORK
from gateway.schema import Schema, build_schema
from gateway.settings import GatewaySettings
from tests.bench.feed import FEED_QUERY as BENCH_FEED_QUERY

SETTINGS = GatewaySettings()
ALIASED_FEEDS = (
    "{ "
    + " ".join(f"f{i}: homeFeed(first: 1) {{ edges {{ node {{ id }} }} }}" for i in range(30))
    + " }"
)
ONE_FEED = "query($n: Int!) { homeFeed(first: $n) { edges { node { id } } } }"


@pytest.fixture(scope="module")
def schema() -> Schema:
    return build_schema()


def prepared(schema: Schema, query: str, settings: GatewaySettings = SETTINGS) -> Any:
    """The document and its operation, having passed the text and shape limits and
    validation: what is left to refuse it is the cost."""
    document = prepare(schema.graphql, query, settings, validation_rules(settings))
    assert document.document is not None
    assert not document.errors, document.errors
    operation = get_operation_ast(document.document)
    assert isinstance(operation, OperationDefinitionNode)
    return document.document, operation


def cost_of(
    schema: Schema,
    query: str,
    variables: dict[str, Any] | None = None,
    settings: GatewaySettings = SETTINGS,
) -> int:
    document, operation = prepared(schema, query, settings)
    coerced = get_variable_values(
        schema.graphql, operation.variable_definitions or (), variables or {}
    )
    assert not isinstance(coerced, list), coerced
    return check_cost(schema.graphql, document, operation, coerced, settings)


def test_a_home_feed_weighs_its_worst_case_pull_and_its_rpcs() -> None:
    assert WORK == PULL_AUTHORS + 2 == 1002
    assert FIELD_WEIGHTS == {"Query.homeFeed": WORK, "Query.trendingPosts": TRENDING_WORK}


def test_thirty_aliased_one_post_home_feeds_are_refused_for_their_backend_work(
    schema: Schema,
) -> None:
    with pytest.raises(LimitExceeded) as raised:
        cost_of(schema, ALIASED_FEEDS)

    # Each: its work, itself, one edge and its node (30 aliases pass maxAliases).
    assert raised.value.extensions == {
        "code": "QUERY_LIMIT_EXCEEDED",
        "limit": "maxCost",
        "value": 30 * (WORK + 1 + 1 + 1),
        "maximum": 2000,
    }
    message = str(raised.value)
    assert message.startswith(f"the query may cost {30 * (WORK + 3)}: ")
    assert f"backend work of Query.homeFeed {WORK} each time" in message
    assert "ask for fewer of those fields" in message


@pytest.mark.parametrize("first", [20, 100])
def test_the_feed_bench_query_fits_under_the_default_max_cost(schema: Schema, first: int) -> None:
    # Its work, homeFeed, pageInfo; per post: edge, node, author, 3 comments and their
    # authors.
    expected = WORK + 2 + first * (3 + 3 * 2)
    assert cost_of(schema, BENCH_FEED_QUERY, {"first": first}) == expected <= SETTINGS.max_cost


def test_two_home_feeds_do_not_fit_even_through_a_fragment(schema: Schema) -> None:
    query = """
    { ...older b: homeFeed(first: 1) { edges { cursor } } }
    fragment older on Query { a: homeFeed(first: 1) { edges { cursor } } }
    """
    with pytest.raises(LimitExceeded) as raised:
        cost_of(schema, query)
    assert raised.value.extensions["value"] == 2 * (WORK + 1 + 1)


def test_a_cost_of_exactly_max_cost_passes_and_one_more_is_refused(schema: Schema) -> None:
    cost = WORK + 1 + 5 * 2
    assert cost_of(schema, ONE_FEED, {"n": 5}, GatewaySettings(max_cost=cost)) == cost
    with pytest.raises(LimitExceeded) as raised:
        cost_of(schema, ONE_FEED, {"n": 5}, GatewaySettings(max_cost=cost - 1))
    assert raised.value.extensions["value"] == cost
    assert raised.value.extensions["maximum"] == cost - 1


def test_a_query_without_weighted_fields_is_still_refused_in_objects(schema: Schema) -> None:
    query = """query($n: Int!) {
      userPosts(userId: "u", first: $n) { edges { node { comments(first: 20) { author { id } } } } }
    }"""
    with pytest.raises(LimitExceeded) as raised:
        cost_of(schema, query, {"n": 100})
    assert raised.value.extensions["value"] == 1 + 100 * (2 + 20 * 2)
    assert str(raised.value).startswith(f"the query may return {1 + 100 * 42} objects; ")


def test_the_actual_cost_charges_a_home_feed_that_resolved_and_nothing_for_no_data(
    schema: Schema,
) -> None:
    document, operation = prepared(schema, ONE_FEED)
    edge = {"node": {"id": "p"}}
    data = {"homeFeed": {"edges": [edge, edge]}}

    assert actual_cost(schema.graphql, document, operation, data) == WORK + 1 + 2 * 2
    assert actual_cost(schema.graphql, document, operation, {"homeFeed": {"edges": []}}) == (
        WORK + 1
    )
    # An anonymous homeFeed fails before any RPC, and its error nulls the data.
    assert actual_cost(schema.graphql, document, operation, None) == 0


def test_trending_posts_are_a_list_of_first_posts_plus_their_aggregation(
    schema: Schema,
) -> None:
    assert cost_of(schema, "{ trendingPosts(first: 7) { id author { id } } }") == (
        TRENDING_WORK + 7 * (1 + 1)
    )
    # `first` defaults to 20; viewCount is a batched field of each post, no weight.
    assert cost_of(schema, "{ trendingPosts { id viewCount } }") == TRENDING_WORK + 20


def test_a_few_trending_windows_fit_and_more_are_refused_for_their_backend_work(
    schema: Schema,
) -> None:
    def windows(count: int) -> str:
        return (
            "{ "
            + " ".join(
                f"w{i}: trendingPosts(windowSeconds: {i + 1}) {{ id }}" for i in range(count)
            )
            + " }"
        )

    assert cost_of(schema, windows(3)) == 3 * (TRENDING_WORK + 20) <= SETTINGS.max_cost
    with pytest.raises(LimitExceeded) as raised:
        cost_of(schema, windows(4))
    assert raised.value.extensions["value"] == 4 * (TRENDING_WORK + 20)
    assert f"Query.trendingPosts {TRENDING_WORK} each time" in str(raised.value)


def test_trending_posts_first_is_bounded_like_every_page(schema: Schema) -> None:
    with pytest.raises(LimitExceeded) as raised:
        cost_of(schema, "{ trendingPosts(first: 101) { id } }")
    assert raised.value.extensions == {
        "code": "QUERY_LIMIT_EXCEEDED",
        "limit": "maxPageSize",
        "value": 101,
        "maximum": 100,
    }
    with pytest.raises(BadUserInput):
        cost_of(schema, "{ trendingPosts(first: 0) { id } }")


def test_view_counts_on_a_feed_page_add_no_cost(schema: Schema) -> None:
    with_views = "query($n: Int!) { homeFeed(first: $n) { edges { node { id viewCount } } } }"
    assert cost_of(schema, with_views, {"n": 20}) == cost_of(schema, ONE_FEED, {"n": 20})
