"""Limits on a document's definitions: how many operations and fragments it may define,
and how often one operation may sign in or up.

The definitions are counted on the parsed document before validation, whose rules run
over every operation and fragment. The sign-ins are counted on the validated document
(fragments known, no cycles): each logIn or signUp field of a mutation's root selection,
aliased or not, under an inline fragment or a fragment spread (counted once per spread),
@skip and @include ignored. One is allowed: each costs a password hash in the user
service, so 25 aliased signUps in one request would be 25 hashes for one HTTP request,
past any per-request limit in front of the gateway.
"""

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
)

from gateway.errors import LimitExceeded
from gateway.settings import GatewaySettings

SIGN_IN_FIELDS = frozenset({"logIn", "signUp"})
"""Mutation fields that hash a password."""
MAX_SIGN_INS = 1
"""Sign-in mutations per operation: a fixed rule (issue 14), not a setting."""


def check_definitions(document: DocumentNode, settings: GatewaySettings) -> None:
    """At most max_operations operations and max_fragments fragments."""
    operations = sum(isinstance(d, OperationDefinitionNode) for d in document.definitions)
    if operations > settings.max_operations:
        raise LimitExceeded(
            f"the document defines {operations} operations; at most "
            f"{settings.max_operations} are allowed (maxOperations): send the one to run",
            limit="maxOperations",
            value=operations,
            maximum=settings.max_operations,
        )
    fragments = sum(isinstance(d, FragmentDefinitionNode) for d in document.definitions)
    if fragments > settings.max_fragments:
        raise LimitExceeded(
            f"the document defines {fragments} fragments; at most "
            f"{settings.max_fragments} are allowed (maxFragments)",
            limit="maxFragments",
            value=fragments,
            maximum=settings.max_fragments,
        )


def check_sign_ins(document: DocumentNode) -> None:
    """At most MAX_SIGN_INS logIn or signUp fields in each mutation of a validated
    document."""
    counter = _SignIns(document)
    for definition in document.definitions:
        if not (
            isinstance(definition, OperationDefinitionNode)
            and definition.operation is OperationType.MUTATION
        ):
            continue
        count = counter.selections(definition.selection_set)
        if count > MAX_SIGN_INS:
            name = f" {definition.name.value}" if definition.name else ""
            raise LimitExceeded(
                f"the mutation{name} asks for {count} logIn or signUp fields; at most "
                f"{MAX_SIGN_INS} is allowed per request (maxSignIns): send one log-in or "
                "sign-up per request",
                limit="maxSignIns",
                value=count,
                maximum=MAX_SIGN_INS,
            )


class _SignIns:
    """Counts root fields only: logIn and signUp exist on Mutation alone, so nothing below
    a field can be one. Validation has ruled out fragment cycles and unknown fragments;
    each fragment is counted once however often it is spread, so fragments spreading
    each other twice over cannot make the count take exponential time."""

    def __init__(self, document: DocumentNode) -> None:
        self._fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self._memo: dict[str, int] = {}

    def selections(self, selection_set: SelectionSetNode) -> int:
        count = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                count += selection.name.value in SIGN_IN_FIELDS
            elif isinstance(selection, InlineFragmentNode):
                count += self.selections(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name not in self._memo:
                    self._memo[name] = self.selections(self._fragments[name].selection_set)
                count += self._memo[name]
        return count
