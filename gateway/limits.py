"""Limits on what one query may ask, all checked before any backend call.

Cheapest first: query length and token count before parsing (graphql-core takes ~100 ms
to validate 1,000 `__typename` fields and ~300 ms to parse and validate 15,000 tokens;
counting stops at the limit, so both are rejected in about 2 ms), depth and
aliases on the parsed document before validation, then page sizes and cost on the
validated operation with its variables. Fragments are measured once each and a
fragment reached again while it is being measured counts as empty, so cycles (which
validation then rejects) cannot recurse forever and spreads cannot blow up the count.

Cost counts the objects a query can return, plus the backend work of the fields that cause
more than their objects show: each field of object type is 1, a field in FIELD_WEIGHTS
adds its weight each time it can run (homeFeed: its RPCs and a timeline that may have to
be read from PostgreSQL, feed.WORK, whatever its page size; trendingPosts: an aggregation
over its window, analytics.TRENDING_WORK), and both are multiplied by
the size of every list around them. A list's size is the `first` of the field that
returned it or of the connection it belongs to (a connection's `edges` are as long as its
`first`), and max_page_size where nothing says. The actual cost is the same count over the
response: the objects it holds, and a weighted field's weight each time it resolved.
"""

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    Lexer,
    OperationDefinitionNode,
    SelectionSetNode,
    Source,
    TokenKind,
    get_named_type,
    get_nullable_type,
    is_composite_type,
    is_list_type,
)
from graphql.execution.values import VariableValues, get_argument_values

from gateway.errors import BadUserInput, LimitExceeded
from gateway.loaders import MAX_COMMENTS_PER_POST
from gateway.resolvers import analytics, feed
from gateway.settings import GatewaySettings

PAGE_SIZE_MAXIMUMS: Mapping[str, int] = {"Post.comments": MAX_COMMENTS_PER_POST}
"""Fields whose `first` has a lower maximum than max_page_size."""
FIELD_WEIGHTS: Mapping[str, int] = {
    "Query.homeFeed": feed.WORK,
    "Query.trendingPosts": analytics.TRENDING_WORK,
}
"""Backend work a field causes beyond the objects it returns, added to the cost each time
it can run. Fields that go through a DataLoader need none: their RPCs are batched per
request and their rows are the objects counted (Post.viewCount's BatchGetPostMetrics
too: one per request, not one per post)."""

_INTROSPECTION = ("__schema", "__type")
"""Skipped by depth and cost: the introspection switch and graphql-core's
MaxIntrospectionDepthRule (run in validation) bound them."""


def check_text(query: str, settings: GatewaySettings) -> int:
    """Query length in UTF-8 bytes, then tokens, counted only up to one past the limit;
    returns the tokens.

    Bytes, not characters: an emoji is one character, four bytes, and four in memory too
    (a Python string with one stores every character in four). Comments count as tokens:
    the parser skips them, but each is a token in the linked list that the document's
    locations keep alive, so 1,000 comments cost what 1,000 fields do. `advance()` steps
    over comments, linking them before the token it returns, so they are counted back
    through `prev`; the length limit bounds one run of them."""
    size = len(query) if query.isascii() else len(query.encode(errors="surrogatepass"))
    if size > settings.max_query_length:
        raise LimitExceeded(
            f"the query is {size} bytes long (UTF-8); at most "
            f"{settings.max_query_length} are allowed (maxQueryLength)",
            limit="maxQueryLength",
            value=size,
            maximum=settings.max_query_length,
        )
    lexer = Lexer(Source(query))
    token = lexer.token
    tokens = 0
    while token.kind is not TokenKind.EOF:
        token = lexer.advance()
        skipped = token.prev
        while skipped is not None and skipped.kind is TokenKind.COMMENT:
            tokens += 1
            skipped = skipped.prev
        tokens += token.kind is not TokenKind.EOF
        if tokens > settings.max_tokens:
            raise LimitExceeded(
                f"the query has more than {settings.max_tokens} tokens, comments included "
                "(maxTokens)",
                limit="maxTokens",
                value=tokens,
                maximum=settings.max_tokens,
            )
    return tokens


def check_shape(document: DocumentNode, settings: GatewaySettings) -> None:
    """Depth and aliases of every operation in the document, before validation."""
    shape = _Shape(document)
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        depth = shape.depth(definition.selection_set)
        if depth > settings.max_depth:
            raise LimitExceeded(
                f"the query is nested {depth} fields deep; at most {settings.max_depth} "
                "are allowed (maxDepth)",
                limit="maxDepth",
                value=depth,
                maximum=settings.max_depth,
            )
        aliases = shape.aliases(definition.selection_set)
        if aliases > settings.max_aliases:
            raise LimitExceeded(
                f"the query has {aliases} aliased fields; at most {settings.max_aliases} "
                "are allowed (maxAliases)",
                limit="maxAliases",
                value=aliases,
                maximum=settings.max_aliases,
            )


def check_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: VariableValues,
    settings: GatewaySettings,
) -> int:
    """Page sizes, then the estimated cost of the validated operation; returns the cost."""
    root = schema.get_root_type(operation.operation)
    assert root is not None, "validation rejects operations the schema has no root for"
    counter = _Cost(schema, document, variables, settings)
    cost = counter.selections(operation.selection_set, root, None)
    if cost > settings.max_cost:
        weighted = ", ".join(f"{name} {FIELD_WEIGHTS[name]}" for name in sorted(counter.weighted))
        raise LimitExceeded(
            (
                f"the query may cost {cost}: the objects it can return plus the backend work "
                f"of {weighted} each time; at most {settings.max_cost} is allowed (maxCost): "
                "ask for fewer of those fields, smaller pages or fewer nested lists"
            )
            if weighted
            else (
                f"the query may return {cost} objects; at most {settings.max_cost} are "
                "allowed (maxCost): ask for smaller pages or fewer nested lists"
            ),
            limit="maxCost",
            value=cost,
            maximum=settings.max_cost,
        )
    return cost


def actual_cost(
    schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode, data: Any
) -> int:
    """The cost count over a response's data: the objects it holds, and the weight of each
    weighted field that resolved (its backend work was done, or could have been)."""
    root = schema.get_root_type(operation.operation)
    assert root is not None, "validation rejects operations the schema has no root for"
    return _Actual(schema, document).selections(operation.selection_set, root, data)


def _fragments(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }


class _Shape:
    def __init__(self, document: DocumentNode) -> None:
        self._fragments = _fragments(document)
        self._depths: dict[str, int] = {}
        self._aliases: dict[str, int] = {}
        self._visiting: set[str] = set()

    def depth(self, selection_set: SelectionSetNode) -> int:
        deepest = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if selection.name.value in _INTROSPECTION:
                    continue
                inner = selection.selection_set
                deepest = max(deepest, 1 + (self.depth(inner) if inner else 0))
            elif isinstance(selection, InlineFragmentNode):
                deepest = max(deepest, self.depth(selection.selection_set))
            elif isinstance(selection, FragmentSpreadNode):
                deepest = max(deepest, self._fragment(selection, self._depths, self.depth))
        return deepest

    def aliases(self, selection_set: SelectionSetNode) -> int:
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += selection.alias is not None
                if selection.selection_set:
                    total += self.aliases(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                total += self.aliases(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                total += self._fragment(selection, self._aliases, self.aliases)
        return total

    def _fragment(
        self,
        spread: FragmentSpreadNode,
        memo: dict[str, int],
        measure: Callable[[SelectionSetNode], int],
    ) -> int:
        name = spread.name.value
        if name in memo:
            return memo[name]
        fragment = self._fragments.get(name)
        if fragment is None or name in self._visiting:
            return 0
        self._visiting.add(name)
        try:
            memo[name] = measure(fragment.selection_set)
        finally:
            self._visiting.discard(name)
        return memo[name]


class _Cost:
    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        variables: VariableValues,
        settings: GatewaySettings,
    ) -> None:
        self._schema = schema
        self._fragments = _fragments(document)
        self._variables = variables
        self._settings = settings
        self._memo: dict[tuple[str, str, int | None], int] = {}
        self.weighted: set[str] = set()
        """The FIELD_WEIGHTS fields the operation asks for, for the refusal's message."""

    def selections(
        self, selection_set: SelectionSetNode, parent: GraphQLNamedType, size: int | None
    ) -> int:
        """`size`: the list size a connection's `first` set for the lists below it."""
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self._field(selection, parent, size)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner = self._schema.get_type(condition.name.value) if condition else parent
                total += self.selections(selection.selection_set, inner or parent, size)
            elif isinstance(selection, FragmentSpreadNode):
                total += self._fragment(selection.name.value, size)
        return total

    def _fragment(self, name: str, size: int | None) -> int:
        fragment = self._fragments[name]
        condition = self._schema.get_type(fragment.type_condition.name.value)
        assert condition is not None, "validation rejects fragments on unknown types"
        key = (name, condition.name, size)
        if key not in self._memo:
            self._memo[key] = self.selections(fragment.selection_set, condition, size)
        return self._memo[key]

    def _field(self, node: FieldNode, parent: GraphQLNamedType, size: int | None) -> int:
        name = node.name.value
        if name.startswith("__") or not isinstance(
            parent, GraphQLObjectType | GraphQLInterfaceType
        ):
            return 0
        definition = parent.fields[name]
        first = self._first(node, parent, name)
        weight = _weight(parent, name)
        if weight:
            self.weighted.add(f"{parent.name}.{name}")
        returned = get_named_type(definition.type)
        if not is_composite_type(returned) or node.selection_set is None:
            return weight
        if is_list_type(get_nullable_type(definition.type)):
            count = first or size or self._settings.max_page_size
            return weight + count * (1 + self.selections(node.selection_set, returned, None))
        return weight + 1 + self.selections(node.selection_set, returned, first or size)

    def _first(
        self, node: FieldNode, parent: GraphQLObjectType | GraphQLInterfaceType, name: str
    ) -> int | None:
        definition = parent.fields[name]
        if "first" not in definition.args:
            return None
        first = get_argument_values(definition, node, self._variables).get("first")
        if first is None:
            return None
        field = f"{parent.name}.{name}"
        maximum = min(
            self._settings.max_page_size,
            PAGE_SIZE_MAXIMUMS.get(field, self._settings.max_page_size),
        )
        if first < 1:
            raise BadUserInput(f"{field}(first: {first}) must ask for at least 1")
        if first > maximum:
            raise LimitExceeded(
                f"{field}(first: {first}) asks for more than the {maximum} allowed (maxPageSize)",
                limit="maxPageSize",
                value=first,
                maximum=maximum,
            )
        assert isinstance(first, int)
        return first


def _weight(parent: GraphQLNamedType, name: str) -> int:
    return FIELD_WEIGHTS.get(f"{parent.name}.{name}", 0)


_Step = tuple[str, int, SelectionSetNode | None, GraphQLNamedType]
"""A field of a selection set that can add to the actual cost: its response key, its
weight, and its selection set and returned type when it is composite."""


class _Actual:
    def __init__(self, schema: GraphQLSchema, document: DocumentNode) -> None:
        self._schema = schema
        self._fragments = _fragments(document)
        self._plans: dict[tuple[int, str], list[_Step]] = {}
        """By selection set (its id: the document outlives the walk) and type: a list's
        items share one, so each is planned once per response, not once per item."""

    def selections(
        self, selection_set: SelectionSetNode, parent: GraphQLNamedType, data: Any
    ) -> int:
        if not isinstance(data, dict):
            return 0
        total = 0
        for key, weight, children, returned in self._plan(selection_set, parent):
            value = data.get(key)
            if value is None:
                continue
            total += weight
            if children is not None:
                items = value if isinstance(value, list) else [value]
                total += sum(
                    1 + self.selections(children, returned, item)
                    for item in items
                    if isinstance(item, dict)
                )
        return total

    def _plan(self, selection_set: SelectionSetNode, parent: GraphQLNamedType) -> list[_Step]:
        memo = (id(selection_set), parent.name)
        plan = self._plans.get(memo)
        if plan is None:
            plan = self._plans[memo] = list(self._steps(selection_set, parent))
        return plan

    def _steps(self, selection_set: SelectionSetNode, parent: GraphQLNamedType) -> Iterator[_Step]:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                name = selection.name.value
                weight = _weight(parent, name)
                if name.startswith("__") or not isinstance(
                    parent, GraphQLObjectType | GraphQLInterfaceType
                ):
                    continue
                if selection.selection_set is None and not weight:
                    continue  # most of a response: a leaf that carries no weight
                returned = get_named_type(parent.fields[name].type)
                key = (selection.alias or selection.name).value
                yield key, weight, selection.selection_set, returned
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner = self._schema.get_type(condition.name.value) if condition else parent
                yield from self._steps(selection.selection_set, inner or parent)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self._fragments[selection.name.value]
                inner = self._schema.get_type(fragment.type_condition.name.value)
                yield from self._steps(fragment.selection_set, inner or parent)
