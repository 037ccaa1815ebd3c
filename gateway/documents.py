"""Query text -> a document that may run, or the errors that say why it may not.

The order puts the cheap checks first: length and tokens before the parser; the number
of definitions, depth and aliases before validation; sign-ins on the validated document.
Validation runs the specification's rules, graphql-core's recommended
MaxIntrospectionDepthRule, and, with introspection off, a rule that rejects `__schema`
and `__type`. A valid document's queries are planned (gateway/plans.py). Each result
carries the estimate of the memory it holds, for the document cache's byte bound.
"""

from graphql import GraphQLError, GraphQLSchema, OperationDefinitionNode, parse, validate
from graphql.validation import (
    ASTValidationRule,
    NoSchemaIntrospectionCustomRule,
    recommended_rules,
    specified_rules,
)

from gateway.document_cache import (
    ERROR_BYTES,
    PLAN_BYTES_PER_FIELD,
    PreparedDocument,
    document_bytes,
    parse_failure_bytes,
)
from gateway.errors import LimitExceeded, coded
from gateway.limits import check_shape, check_text
from gateway.operations import check_definitions, check_sign_ins
from gateway.plans import plan_operation
from gateway.settings import GatewaySettings


def validation_rules(settings: GatewaySettings) -> tuple[type[ASTValidationRule], ...]:
    rules = specified_rules + recommended_rules
    if not settings.introspection_enabled:
        rules += (NoSchemaIntrospectionCustomRule,)
    return rules


def prepare(
    schema: GraphQLSchema,
    query: str,
    settings: GatewaySettings,
    rules: tuple[type[ASTValidationRule], ...],
) -> PreparedDocument:
    try:
        tokens = check_text(query, settings)
        document = parse(query)
    except LimitExceeded as error:
        return _refused(error)
    except GraphQLError as error:
        failed = (coded(error, "GRAPHQL_PARSE_FAILED"),)
        return PreparedDocument(None, failed, parse_failure_bytes(query))
    try:
        check_definitions(document, settings)
        check_shape(document, settings)
    except LimitExceeded as error:
        return _refused(error)
    invalid = validate(schema, document, rules)
    if invalid:
        errors = tuple(coded(error, "GRAPHQL_VALIDATION_FAILED") for error in invalid)
        size = document_bytes(query, tokens) + ERROR_BYTES * len(errors)
        return PreparedDocument(document, errors, size)
    try:
        check_sign_ins(document)
    except LimitExceeded as error:
        return _refused(error)
    plans = {
        definition.name.value if definition.name else None: plan_operation(
            schema, document, definition, max_fields=tokens
        )
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
    }
    planned = sum(plan.size for plan in plans.values() if plan is not None)
    size = document_bytes(query, tokens) + PLAN_BYTES_PER_FIELD * planned
    return PreparedDocument(document, (), size, plans)


def _refused(error: LimitExceeded) -> PreparedDocument:
    """A limit's verdict, without the document: only the error is kept."""
    return PreparedDocument(None, (_limit_error(error),), ERROR_BYTES)


def _limit_error(error: LimitExceeded) -> GraphQLError:
    return GraphQLError(error.message, extensions=error.extensions)
