"""Query text -> a document that may run, or the errors that say why it may not.

The order puts the cheap checks first: length and tokens before the parser, depth and
aliases before validation. Validation runs the specification's rules, graphql-core's
recommended MaxIntrospectionDepthRule, and, with introspection off, a rule that
rejects `__schema` and `__type`.
"""

from graphql import GraphQLError, GraphQLSchema, parse, validate
from graphql.validation import (
    ASTValidationRule,
    NoSchemaIntrospectionCustomRule,
    recommended_rules,
    specified_rules,
)

from gateway.document_cache import PreparedDocument
from gateway.errors import LimitExceeded, coded
from gateway.limits import check_shape, check_text
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
        check_text(query, settings)
        document = parse(query)
    except LimitExceeded as error:
        return PreparedDocument(None, (_limit_error(error),))
    except GraphQLError as error:
        return PreparedDocument(None, (coded(error, "GRAPHQL_PARSE_FAILED"),))
    try:
        check_shape(document, settings)
    except LimitExceeded as error:
        return PreparedDocument(None, (_limit_error(error),))
    errors = validate(schema, document, rules)
    return PreparedDocument(
        document, tuple(coded(error, "GRAPHQL_VALIDATION_FAILED") for error in errors)
    )


def _limit_error(error: LimitExceeded) -> GraphQLError:
    return GraphQLError(error.message, extensions=error.extensions)
