"""Planned execution: a validated query's selections collected once into a plan, then run
without graphql-core's per-field machinery.

For every field of every object graphql-core looks the field up, collects its
sub-selections, builds a Path and a ResolveInfo, calls a resolver (the default one for a
plain field) and walks the type's wrappers to complete the value: a 20-post feed page
is ~700 fields and that work was 6 of the gateway's ~10 ms of CPU per page. A plan does
the lookups, the collection and the type walk once per document (it is kept with the
document in the cache); a run reads a plain field straight off its parent (a protobuf
message or a dict), builds a ResolveInfo only for a field with a resolver of its own,
and makes a Path only where a resolver, a list or an error needs one.

A run does what graphql-core's execution does: the same resolvers with the same
arguments and ResolveInfo, the same output coercion, errors located at their path, a
null propagated to the nearest nullable position with one error for it and none from
below it (graphql-core's CollectedErrors), awaitables completed as each one settles (so
DataLoader batches form as they do there). What it does not plan, graphql-core runs:
mutations and subscriptions, any directive (@skip, @include, @defer, …), abstract types
and introspection (`plan_operation` answers None). tests/unit/test_gateway_plans.py runs each
shape through both and compares the responses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeGuard

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLResolveInfoHelpers,
    GraphQLSchema,
    GraphQLString,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    Undefined,
    is_abstract_type,
    is_leaf_type,
    is_object_type,
    located_error,
    type_from_ast,
)
from graphql.execution.executor import CollectedErrors
from graphql.execution.values import VariableValues, get_argument_values
from graphql.pyutils import Path, gather_with_cancel, inspect, is_iterable

_NO_ARGUMENTS: dict[str, Any] = {}
_MAPPINGS: dict[type, bool] = {}
"""Whether a type of parent is a Mapping (read by key) or not (by attribute), as the
default resolvers tell, remembered: the ABC check costs more than the read."""


class _Unplannable(Exception):
    """The document uses something a plan does not cover; graphql-core runs it."""


@dataclass(frozen=True, slots=True)
class _Shape:
    """How a value of one output type is completed, read off the type once."""

    type: GraphQLOutputType
    non_null: bool
    coerce: Callable[[Any], Any] | None
    """A scalar's or enum's coerce_output_value."""
    item: _Shape | None
    """A list's items."""
    fields: tuple[_Field, ...]
    """An object's selections."""


@dataclass(frozen=True, slots=True)
class _Field:
    key: str
    """The response key (the alias, else the name)."""
    name: str
    nodes: list[FieldNode]
    parent: GraphQLObjectType
    definition: GraphQLField
    resolve: Callable[..., Any] | None
    """None: the value is read off the parent (`attribute`), as the default resolvers of
    graphql-core and Ariadne read it."""
    attribute: str
    typename: bool
    """`__typename`: the parent type's name."""
    shape: _Shape


@dataclass(frozen=True, slots=True)
class Plan:
    root: GraphQLObjectType
    fields: tuple[_Field, ...]
    fragments: dict[str, FragmentDefinitionNode]
    """The document's named fragments, as resolvers see them in ResolveInfo."""
    size: int
    """Fields planned, over every selection set (what the plan holds in memory)."""


def plan_operation(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    *,
    max_fields: int,
) -> Plan | None:
    """The plan of a query of a validated document, or None for graphql-core to run it:
    not a query, or it uses a directive, an abstract type or introspection, or its plan
    would hold more than `max_fields` fields (named fragments spread in several places
    are planned in each)."""
    root = schema.query_type
    if operation.operation is not OperationType.QUERY or root is None or operation.directives:
        return None
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    planner = _Planner(schema, fragments, max_fields)
    try:
        fields = planner.collect(root, [operation.selection_set])
    except (_Unplannable, RecursionError):
        return None
    return Plan(root, fields, fragments, planner.size)


class _Planner:
    def __init__(
        self, schema: GraphQLSchema, fragments: Mapping[str, FragmentDefinitionNode], limit: int
    ) -> None:
        self._schema = schema
        self._fragments = fragments
        self._limit = limit
        self.size = 0

    def collect(
        self, parent: GraphQLObjectType, selection_sets: Iterable[SelectionSetNode]
    ) -> tuple[_Field, ...]:
        """graphql-core's collect_fields, done once: response keys in the order they
        first appear, each named fragment visited once per selection set."""
        grouped: dict[str, list[FieldNode]] = {}
        visited: set[str] = set()

        def visit(selection_set: SelectionSetNode) -> None:
            for selection in selection_set.selections:
                if selection.directives:
                    raise _Unplannable
                if isinstance(selection, FieldNode):
                    key = selection.alias.value if selection.alias else selection.name.value
                    grouped.setdefault(key, []).append(selection)
                elif isinstance(selection, InlineFragmentNode):
                    if self._applies(selection, parent):
                        visit(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    fragment = self._fragments.get(name)
                    if name in visited or fragment is None:
                        continue
                    visited.add(name)
                    if fragment.directives:
                        raise _Unplannable
                    if self._applies(fragment, parent):
                        visit(fragment.selection_set)

        for selection_set in selection_sets:
            visit(selection_set)
        return tuple(
            planned
            for key, nodes in grouped.items()
            if (planned := self._field(parent, key, nodes)) is not None
        )

    def _applies(
        self, fragment: InlineFragmentNode | FragmentDefinitionNode, parent: GraphQLObjectType
    ) -> bool:
        if fragment.type_condition is None:
            return True
        condition = type_from_ast(self._schema, fragment.type_condition)
        if condition is parent:
            return True
        if is_abstract_type(condition):
            return self._schema.is_sub_type(condition, parent)
        return False

    def _field(self, parent: GraphQLObjectType, key: str, nodes: list[FieldNode]) -> _Field | None:
        self.size += 1
        if self.size > self._limit:
            raise _Unplannable
        name = nodes[0].name.value
        if name == "__typename":
            shape = _Shape(GraphQLNonNull(GraphQLString), True, None, None, ())
            definition = GraphQLField(GraphQLNonNull(GraphQLString))
            return _Field(key, name, nodes, parent, definition, None, name, True, shape)
        if name.startswith("__"):
            raise _Unplannable
        definition = parent.fields.get(name)
        if definition is None:
            return None  # graphql-core leaves the key out too (validation forbids it)
        resolve, attribute = _reader(definition.resolve, name)
        shape = self._shape(definition.type, nodes)
        return _Field(key, name, nodes, parent, definition, resolve, attribute, False, shape)

    def _shape(self, type_: GraphQLOutputType, nodes: list[FieldNode]) -> _Shape:
        non_null = isinstance(type_, GraphQLNonNull)
        named = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
        if isinstance(named, GraphQLList):
            return _Shape(type_, non_null, None, self._shape(named.of_type, nodes), ())
        if is_leaf_type(named):
            return _Shape(type_, non_null, named.coerce_output_value, None, ())
        if is_object_type(named) and named.is_type_of is None:
            selections = [node.selection_set for node in nodes if node.selection_set]
            return _Shape(type_, non_null, None, None, self.collect(named, selections))
        raise _Unplannable


def _reader(resolve: Callable[..., Any] | None, name: str) -> tuple[Callable[..., Any] | None, str]:
    """(None, attribute) for a field the default resolver answers: none set, or Ariadne's
    resolve_to (its camelCase-to-snake_case alias), whose attribute is its closure's."""
    if resolve is None:
        return None, name
    if getattr(resolve, "_ariadne_alias_resolver", False) and resolve.__closure__:
        cells = dict(zip(resolve.__code__.co_freevars, resolve.__closure__, strict=True))
        cell = cells.get("attr_name")
        attribute = cell.cell_contents if cell is not None else None
        if isinstance(attribute, str) and "." not in attribute:
            return None, attribute
    return resolve, name


_Anchor = tuple[Any, str | int, Path] | None
"""The nearest nullable position at or above a value: its container (an object's dict,
keyed by response key, or a list, by index), its key there and its path; None is the
response's data itself."""


@dataclass(slots=True)
class _Pending:
    """A value still being awaited, and where its completion goes."""

    field: _Field
    shape: _Shape
    path: Path
    container: Any
    """As in _Anchor."""
    key: str | int
    anchor: _Anchor


async def run_plan(
    plan: Plan,
    *,
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    variables: VariableValues,
    context: Any,
    is_awaitable: Callable[[Any], TypeGuard[Awaitable[Any]]],
) -> ExecutionResult:
    """The response, as graphql-core's execute would give it for this operation."""
    run = _Run(schema, plan.fragments, operation, variables, context, is_awaitable)
    return await run.execute(plan)


class _Run:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        operation: OperationDefinitionNode,
        variables: VariableValues,
        context: Any,
        is_awaitable: Callable[[Any], TypeGuard[Awaitable[Any]]],
    ) -> None:
        self._schema = schema
        self._fragments = fragments
        self._operation = operation
        self._variables = variables
        self._context = context
        self._is_awaitable = is_awaitable
        self._helpers = GraphQLResolveInfoHelpers(gather=self._gather, track=self._track)
        self._errors = CollectedErrors()
        self._arguments: dict[int, dict[str, Any]] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._outstanding = 0
        self._settled: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None
        self._response: dict[str, Any] = {}

    async def execute(self, plan: Plan) -> ExecutionResult:
        response = self._response
        try:
            response["data"] = self._object(plan.fields, None, None, None)
        except GraphQLError as error:
            self._errors.add(error, None)
            response["data"] = None
        try:
            if self._outstanding:
                self._settled = asyncio.get_running_loop().create_future()
                await self._settled
        finally:
            for task in self._tasks:
                task.cancel()
        if self._failure is not None:
            raise self._failure
        return ExecutionResult(response["data"], self._errors.errors or None)

    # The synchronous walk: values that are there are completed where they stand.

    def _object(
        self,
        fields: tuple[_Field, ...],
        source: Any,
        path: Path | None,
        anchor: _Anchor,
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for field in fields:
            result[field.key] = self._field(field, source, path, result, anchor)
        return result

    def _field(
        self,
        field: _Field,
        source: Any,
        parent_path: Path | None,
        container: dict[str, Any],
        anchor: _Anchor,
    ) -> Any:
        shape = field.shape
        if field.resolve is None:
            if field.typename:
                return field.parent.name
            kind = type(source)
            mapping = _MAPPINGS.get(kind)
            if mapping is None:
                mapping = _MAPPINGS[kind] = isinstance(source, Mapping)
            value = (
                source.get(field.attribute) if mapping else getattr(source, field.attribute, None)
            )
            if not callable(value):
                coerce = shape.coerce
                if coerce is not None and value is not None:
                    # A plain scalar: no Path unless coercion fails.
                    try:
                        coerced = coerce(value)
                    except Exception:
                        coerced = None
                    if coerced is not None and coerced is not Undefined:
                        return coerced
                path = Path(parent_path, field.key, field.parent.name)
                return self._settle(field, value, path, container, anchor)
            path = Path(parent_path, field.key, field.parent.name)
            call: Callable[..., Any] = value
            try:
                value = call(self._info(field, path), **self._argument_values(field))
            except Exception as error:
                return self._failed(error, field, shape, path)
        else:
            path = Path(parent_path, field.key, field.parent.name)
            try:
                value = field.resolve(
                    source, self._info(field, path), **self._argument_values(field)
                )
            except Exception as error:
                return self._failed(error, field, shape, path)
        return self._settle(field, value, path, container, anchor)

    def _settle(
        self,
        field: _Field,
        value: Any,
        path: Path,
        container: dict[str, Any],
        anchor: _Anchor,
    ) -> Any:
        """A field's completed value; None in its place while it is awaited."""
        shape = field.shape
        own = anchor if shape.non_null else (container, field.key, path)
        if self._is_awaitable(value):
            self._await(value, _Pending(field, shape, path, container, field.key, own))
            return None
        try:
            return self._complete(field, shape, value, path, own)
        except Exception as error:
            return self._failed(error, field, shape, path)

    def _complete(
        self, field: _Field, shape: _Shape, value: Any, path: Path, anchor: _Anchor
    ) -> Any:
        """graphql-core's complete_value; `anchor` is the value's own position if it is
        nullable, else the nearest nullable one above."""
        if isinstance(value, Exception):
            raise value
        if value is None or value is Undefined:
            if shape.non_null:
                raise TypeError(
                    f"Cannot return null for non-nullable field {field.parent.name}.{field.name}."
                )
            return None
        if shape.coerce is not None:
            coerced = shape.coerce(value)
            if coerced is Undefined or coerced is None:
                named = shape.type.of_type if isinstance(shape.type, GraphQLNonNull) else shape.type
                raise TypeError(
                    f"Expected `{inspect(named)}.coerce_output_value({inspect(value)})`"
                    f" to return non-nullable value, returned: {inspect(coerced)}"
                )
            return coerced
        if shape.item is not None:
            return self._list(field, shape.item, value, path, anchor)
        return self._object(shape.fields, value, path, anchor)

    def _list(
        self, field: _Field, item: _Shape, values: Any, path: Path, anchor: _Anchor
    ) -> list[Any]:
        if not is_iterable(values):
            raise GraphQLError(
                "Expected Iterable, but did not find one for field"
                f" '{field.parent.name}.{field.name}'."
            )
        completed: list[Any] = []
        for index, value in enumerate(values):
            item_path = Path(path, index, None)
            own = anchor if item.non_null else (completed, index, item_path)
            if self._is_awaitable(value):
                completed.append(None)
                self._await(value, _Pending(field, item, item_path, completed, index, own))
                continue
            try:
                completed.append(self._complete(field, item, value, item_path, own))
            except Exception as error:
                completed.append(self._failed(error, field, item, item_path))
        return completed

    def _failed(self, error: Exception, field: _Field, shape: _Shape, path: Path) -> Any:
        """graphql-core's handle_field_error: a non-null position passes the error up to
        the nearest nullable one, which becomes null and keeps it."""
        located = located_error(error, field.nodes, path.as_list())
        if shape.non_null:
            raise located
        self._errors.add(located, path)
        return None

    def _info(self, field: _Field, path: Path) -> GraphQLResolveInfo[Any]:
        return GraphQLResolveInfo(
            field.name,
            field.nodes,
            field.definition.type,
            field.parent,
            path,
            self._schema,
            self._fragments,
            None,
            self._operation,
            self._variables,
            self._context,
            self._is_awaitable,
            None,
            self._helpers,
        )

    def _argument_values(self, field: _Field) -> dict[str, Any]:
        if not field.definition.args and not field.nodes[0].arguments:
            return _NO_ARGUMENTS
        found = self._arguments.get(id(field))
        if found is None:
            found = get_argument_values(field.definition, field.nodes[0], self._variables)
            self._arguments[id(field)] = found
        return found

    # Awaited values: each completes when it settles, in a done callback.

    def _await(self, value: Awaitable[Any], pending: _Pending) -> None:
        future = asyncio.ensure_future(value)
        if future is not value:
            self._tasks.add(future)
        self._outstanding += 1
        future.add_done_callback(partial(self._resume, pending))

    def _resume(self, pending: _Pending, future: asyncio.Future[Any]) -> None:
        self._tasks.discard(future)
        try:
            self._complete_later(pending, future)
        except BaseException as failure:  # a bug or a cancellation: execute() raises it
            if self._failure is None:
                self._failure = failure
        self._one_settled()

    def _one_settled(self) -> None:
        self._outstanding -= 1
        if self._outstanding == 0 and self._settled is not None and not self._settled.done():
            self._settled.set_result(None)

    def _complete_later(self, pending: _Pending, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            raise asyncio.CancelledError
        error = future.exception()
        if error is not None and not isinstance(error, Exception):
            raise error
        field, shape, path = pending.field, pending.shape, pending.path
        try:
            value = error if error is not None else future.result()
            completed = self._complete(field, shape, value, path, pending.anchor)
            pending.container[pending.key] = completed
        except Exception as failure:
            located = located_error(failure, field.nodes, path.as_list())
            anchor = pending.anchor
            if anchor is None:
                self._errors.add(located, None)
                self._response["data"] = None
            else:
                container, key, anchor_path = anchor
                container[key] = None
                self._errors.add(located, anchor_path)

    def _gather(self, values: Any) -> Awaitable[list[Any]]:
        return gather_with_cancel(*values)

    def _track(self, values: Any) -> None:
        """Work a resolver started and did not return: settled before the response."""
        for value in values:
            if self._is_awaitable(value):
                future = asyncio.ensure_future(value)
                self._tasks.add(future)
                self._outstanding += 1
                future.add_done_callback(self._tracked)

    def _tracked(self, future: asyncio.Future[Any]) -> None:
        self._tasks.discard(future)
        if not future.cancelled():
            future.exception()  # observed, as graphql-core's settle_in_background does
        self._one_settled()
