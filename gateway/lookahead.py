"""What a query asks for below the field being resolved: so a resolver can start the loads
its children will make, together, instead of one tree level at a time.

The home feed uses it: the post ids and their authors come from GetHomeFeed, so the
posts and their comments can be fetched side by side, and the post authors and the
commenters in one BatchGetUsers — DataLoaders alone would send that one once per level.
Fragments (inline and named) are followed; `@skip`/`@include` are not evaluated, so a
skipped field may be loaded for nothing, never missed.
"""

from collections.abc import Iterable, Sequence
from typing import Any

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLResolveInfo,
    InlineFragmentNode,
    SelectionSetNode,
)
from graphql.execution.values import get_argument_values


def selected(info: GraphQLResolveInfo[Any], path: Sequence[str]) -> list[FieldNode]:
    """The field nodes at `path` (field names, by schema name, not alias) below the
    field being resolved."""
    nodes: list[FieldNode] = list(info.field_nodes)
    for name in path:
        nodes = [
            child
            for node in nodes
            for child in _fields(info, node.selection_set)
            if child.name.value == name
        ]
    return nodes


def arguments(
    info: GraphQLResolveInfo[Any], nodes: Iterable[FieldNode], field: GraphQLField
) -> list[dict[str, Any]]:
    """Each node's arguments, with defaults and the request's variables applied."""
    return [get_argument_values(field, node, info.variable_values) for node in nodes]


def _fields(info: GraphQLResolveInfo[Any], selections: SelectionSetNode | None) -> list[FieldNode]:
    found: list[FieldNode] = []
    seen: set[str] = set()

    def walk(selection_set: SelectionSetNode | None) -> None:
        if selection_set is None:
            return
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                found.append(selection)
            elif isinstance(selection, InlineFragmentNode):
                walk(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = info.fragments.get(name)
                if fragment is not None and name not in seen:
                    seen.add(name)
                    walk(fragment.selection_set)

    walk(selections)
    return found
