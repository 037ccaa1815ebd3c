"""Planned execution against graphql-core's: every query runs both ways on the same
schema and resolvers and must give the same response, errors (message, path, locations)
and their order included."""

from __future__ import annotations

import asyncio
import tracemalloc
from dataclasses import dataclass, field
from typing import Any

import pytest
from graphql import (
    ExecutionResult,
    GraphQLResolveInfo,
    GraphQLSchema,
    OperationDefinitionNode,
    build_schema,
    execute,
    parse,
    validate,
)
from graphql.execution.values import get_variable_values

from gateway.document_cache import PLAN_BYTES_PER_FIELD
from gateway.execution import _is_awaitable
from gateway.plans import Plan, plan_operation, run_plan
from gateway.schema import build_schema as build_gateway_schema
from tests.bench.feed import FEED_QUERY

SDL = """
type Query {
  items(n: Int = 2): [Item!]!
  maybeItems: [Item]
  item(id: ID!): Item
  strict: Item!
  boom: String
  strictBoom: String!
  later: Item
  laterList: [Item!]
  laterItems: [Item]
  pair: Pair
  number: Int
  badNumber: Int
  greeting(name: String = "you"): String
}
type Item {
  id: ID!
  name: String
  nick: String!
  friends(first: Int = 1): [Item!]
  fails: String
  failsHard: String!
  slow: Item
  slowHard: String!
}
type Pair { left: String right: Int shout: String }
type Mutation { touch: Int }
"""


@dataclass
class Item:
    id: str
    name: str | None = None
    nick: str | None = "nick"
    friends_of: list[Item] = field(default_factory=list)


def _items(count: int) -> list[Item]:
    return [Item(id=str(index), name=f"item {index}") for index in range(count)]


async def _later(value: Any) -> Any:
    await asyncio.sleep(0)
    if isinstance(value, Exception):
        raise value
    return value


def _schema() -> GraphQLSchema:
    schema = build_schema(SDL)
    query = schema.query_type
    assert query is not None
    item = schema.get_type("Item")
    resolvers: dict[tuple[Any, str], Any] = {
        (query, "items"): lambda _, info, n: _items(n),
        (query, "maybeItems"): lambda *_: [Item("a"), None, Item("b", nick=None)],
        (query, "item"): lambda _, info, id: None if id == "none" else Item(id),
        (query, "strict"): lambda *_: Item("s", nick=None),
        (query, "boom"): lambda *_: _raise(ValueError("boom")),
        (query, "strictBoom"): lambda *_: _raise(ValueError("strict boom")),
        (query, "later"): lambda *_: _later(Item("l")),
        (query, "laterList"): lambda *_: [_later(Item("x")), _later(ValueError("gone"))],
        (query, "laterItems"): lambda *_: [_later(Item("y")), _later(ValueError("gone")), None],
        (query, "pair"): lambda *_: {"left": "L", "right": 2, "shout": lambda info: "HEY"},
        (query, "number"): lambda *_: 7,
        (query, "badNumber"): lambda *_: "not a number",
        (query, "greeting"): lambda _, info, name: f"hello {name}",
        (item, "friends"): lambda parent, info, first: _items(first),
        (item, "fails"): lambda *_: _raise(ValueError("fails")),
        (item, "failsHard"): lambda *_: _raise(ValueError("fails hard")),
        (item, "slow"): lambda parent, info: _later(Item(parent.id + "-slow")),
        (item, "slowHard"): lambda *_: _later(ValueError("slow and hard")),
    }
    for (type_, name), resolver in resolvers.items():
        type_.fields[name].resolve = resolver
    return schema


def _raise(error: Exception) -> Any:
    raise error


SCHEMA = _schema()


def _operation(query: str) -> tuple[Any, OperationDefinitionNode]:
    document = parse(query)
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    return document, operations[0]


async def _both(
    query: str, variables: dict[str, Any] | None = None
) -> tuple[ExecutionResult, ExecutionResult]:
    document, operation = _operation(query)
    assert validate(SCHEMA, document) == []
    plan = plan_operation(SCHEMA, document, operation, max_fields=1000)
    assert plan is not None, "the query should be planned"
    coerced = get_variable_values(SCHEMA, operation.variable_definitions or (), variables or {})
    assert not isinstance(coerced, list)
    planned = await run_plan(
        plan,
        schema=SCHEMA,
        operation=operation,
        variables=coerced,
        context=None,
        is_awaitable=_is_awaitable,
    )
    expected = execute(SCHEMA, document, variable_values=variables, is_awaitable=_is_awaitable)
    if _is_awaitable(expected):
        expected = await expected
    assert isinstance(expected, ExecutionResult)
    return planned, expected


def _errors(result: ExecutionResult) -> list[Any]:
    return [error.formatted for error in result.errors or ()]


QUERIES = {
    "plain fields": "{ items { id name } number }",
    "aliases and merged fields": (
        "{ a: items(n: 3) { id } b: items(n: 1) { id name } items { id } items { name } }"
    ),
    "fragments": """
        query { items { ...Named ... on Item { name } ... { id } } pair { ...Sides } }
        fragment Named on Item { id name friends { id ...Nick ...Nick } }
        fragment Sides on Pair { left right }
        fragment Nick on Item { nick }
    """,
    "typename": "{ __typename items { __typename id } pair { __typename } }",
    "a nullable field's error": "{ items { id fails } boom number }",
    "non-null errors up to the data": "{ items { failsHard } number }",
    "non-null errors up to a nullable list item": "{ maybeItems { id nick } number }",
    "null for a non-null field": '{ item(id: "none") { id } strict { id nick } }',
    "a non-null root field's error": "{ number strictBoom }",
    "output coercion": "{ badNumber number }",
    "dicts and callables of the default resolver": "{ pair { left right shout } }",
    "arguments with defaults": (
        '{ greeting a: greeting(name: "ada") items(n: 1) { friends { id } } }'
    ),
}


@pytest.mark.parametrize("query", QUERIES.values(), ids=QUERIES.keys())
async def test_a_plan_answers_what_graphql_core_answers(query: str) -> None:
    planned, expected = await _both(query)

    assert planned.data == expected.data
    assert _errors(planned) == _errors(expected)


AWAITED = {
    "awaited values and their errors": (
        "{ later { id slow { id slow { id } } } laterList { id } laterItems { id slow { id } } }"
    ),
    "an awaited non-null error under a nulled position": "{ items(n: 3) { id slowHard } number }",
    "awaited errors below a nullable object": "{ later { id slowHard slow { slowHard } } }",
}


@pytest.mark.parametrize("query", AWAITED.values(), ids=AWAITED.keys())
async def test_with_awaited_values_a_plan_answers_the_same_errors_in_the_order_they_settle(
    query: str,
) -> None:
    """Awaited values settle in an order graphql-core's layers of coroutines decide (it
    awaits each value through several), so errors may come in another order, and an
    error below a position nulled by an error that settled first is left out, as
    graphql-core leaves it out when they settle in that order."""
    planned, expected = await _both(query)

    assert planned.data == expected.data
    errors = _errors(planned)
    assert errors, "each query fails somewhere"
    assert all(error in _errors(expected) for error in errors)
    for error in _errors(expected):
        if error not in errors:
            assert _below_a_null(error["path"], planned.data), error


def _below_a_null(path: list[str | int], data: Any) -> bool:
    """Whether a position above `path` is null in the response."""
    value = data
    for key in path[:-1]:
        value = value[key]
        if value is None:
            return True
    return False


async def test_variables_reach_the_arguments_of_every_item() -> None:
    query = """query($n: Int, $who: String) {
      items(n: $n) { id friends(first: $n) { id } } greeting(name: $who)
    }"""
    planned, expected = await _both(query, {"n": 3, "who": "grace"})

    assert planned.data == expected.data
    assert planned.data is not None
    assert len(planned.data["items"]) == 3
    assert planned.data["greeting"] == "hello grace"


@pytest.mark.parametrize(
    "query",
    [
        "mutation { touch }",
        "{ items @include(if: true) { id } }",
        "{ items { id @skip(if: false) } }",
        "{ items { ...F } } fragment F on Item @deprecated { id }",
        "{ __schema { queryType { name } } }",
        '{ __type(name: "Item") { name } }',
    ],
)
def test_what_a_plan_does_not_cover_is_left_to_graphql_core(query: str) -> None:
    document, operation = _operation(query)

    assert plan_operation(SCHEMA, document, operation, max_fields=1000) is None


def test_a_plan_holds_at_most_max_fields_fields() -> None:
    # Each spread of F is planned where it is used: 2 x 2 x 2 leaves and their parents.
    query = """
    { a: items { ...F } b: items { ...F } }
    fragment F on Item { x: friends { ...G } y: friends { ...G } }
    fragment G on Item { id name }
    """
    document, operation = _operation(query)
    plan = plan_operation(SCHEMA, document, operation, max_fields=1000)
    assert plan is not None
    assert plan.size == 2 + 2 * 2 + 2 * 2 * 2

    assert plan_operation(SCHEMA, document, operation, max_fields=plan.size) is not None
    assert plan_operation(SCHEMA, document, operation, max_fields=plan.size - 1) is None


def test_the_feed_querys_plan_fits_the_document_caches_estimate() -> None:
    schema = build_gateway_schema().graphql
    documents = [parse(FEED_QUERY) for _ in range(20)]
    operations = [document.definitions[0] for document in documents]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        plans: list[Plan | None] = [
            plan_operation(schema, document, operation, max_fields=1000)  # type: ignore[arg-type]
            for document, operation in zip(documents, operations, strict=True)
        ]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    sizes = [plan.size for plan in plans if plan is not None]
    assert len(sizes) == 20
    assert held / sum(sizes) <= PLAN_BYTES_PER_FIELD


async def test_a_resolver_gets_the_info_graphql_core_would_give_it() -> None:
    seen: dict[str, list[Any]] = {"plan": [], "core": []}
    schema = build_schema("type Query { item: Item } type Item { id: ID! tag(x: Int): String }")
    query_type, item = schema.query_type, schema.get_type("Item")
    assert query_type is not None
    query_type.fields["item"].resolve = lambda *_: {"id": "1"}
    target = seen["plan"]

    def tag(parent: Any, info: GraphQLResolveInfo[Any], x: int) -> str:
        target.append(
            (
                info.field_name,
                info.parent_type.name,
                str(info.return_type),
                info.path.as_list(),
                [node.name.value for node in info.field_nodes],
                info.context,
                info.operation.name.value if info.operation.name else None,
                info.variable_values.coerced,
                x,
            )
        )
        return "t"

    item.fields["tag"].resolve = tag  # type: ignore[union-attr]
    query = "query Q($x: Int) { item { a: tag(x: $x) tag(x: 2) } }"
    document, operation = _operation(query)
    plan = plan_operation(schema, document, operation, max_fields=100)
    assert plan is not None
    coerced = get_variable_values(schema, operation.variable_definitions or (), {"x": 5})
    assert not isinstance(coerced, list)
    await run_plan(
        plan,
        schema=schema,
        operation=operation,
        variables=coerced,
        context="ctx",
        is_awaitable=_is_awaitable,
    )
    target = seen["core"]
    result = execute(schema, document, variable_values={"x": 5}, context_value="ctx")
    assert isinstance(result, ExecutionResult)

    assert seen["plan"] == seen["core"]
    assert [call[3] for call in seen["plan"]] == [["item", "a"], ["item", "tag"]]


async def test_a_cancelled_run_cancels_what_it_awaits() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def forever(*_: Any) -> Any:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    schema = build_schema("type Query { slow: Int }")
    assert schema.query_type is not None
    schema.query_type.fields["slow"].resolve = forever
    document, operation = _operation("{ slow }")
    plan = plan_operation(schema, document, operation, max_fields=10)
    assert plan is not None
    coerced = get_variable_values(schema, (), {})
    assert not isinstance(coerced, list)
    run = asyncio.create_task(
        run_plan(
            plan,
            schema=schema,
            operation=operation,
            variables=coerced,
            context=None,
            is_awaitable=_is_awaitable,
        )
    )
    await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await asyncio.wait_for(cancelled.wait(), 1)
