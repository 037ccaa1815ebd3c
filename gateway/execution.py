"""One GraphQL request from its JSON to the response's JSON: persisted query lookup,
the document cache, limits, then execution against the services.

Everything before execution runs without a backend call, so a request that breaks a
limit, fails validation or names an unknown persisted query costs no RPC. What stops a
request is told apart as GraphQL over HTTP needs: a body that is not a GraphQL request
(400 whatever the media type), a GraphQL request error (200 under application/json, 4xx
under application/graphql-response+json), or a mutation sent with GET (405).
"""

import asyncio
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from inspect import isawaitable
from types import CoroutineType
from typing import Any, TypeGuard

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    execute,
    get_operation_ast,
)
from graphql.execution.values import VariableValues, get_variable_values

from gateway.auth import check_tenant_header, viewer_from_header
from gateway.clients import Backend, Clients
from gateway.context import RequestContext
from gateway.document_cache import DocumentCache, PreparedDocument
from gateway.documents import prepare, validation_rules
from gateway.errors import (
    BadRequest,
    GatewayError,
    Unauthenticated,
    coded,
    format_error,
    request_error,
)
from gateway.limits import actual_cost, check_cost
from gateway.loaders import Loaders
from gateway.persisted_queries import PersistedQueries
from gateway.plans import Plan, run_plan
from gateway.registration_rate import RegistrationRate
from gateway.schema import Schema
from gateway.settings import GatewaySettings
from gateway.variables import check_unicode, check_variables


@dataclass(frozen=True)
class Outcome:
    status: int
    """The HTTP status under application/graphql-response+json: 200 once execution ran
    (even if every field failed); for a GraphQL request error 400, or 401 for an
    Authorization header that is not a token; 400 for a body that is not a GraphQL
    request; 405 for a mutation sent with GET."""
    body: dict[str, Any]
    backend_seconds: float
    """Time during which at least one RPC of the request was in flight."""
    request_error: bool = False
    """Stopped by a GraphQL request error (parse, validation, a limit, the variables, the
    operation to run, a persisted query's lookup, the token's form): application/json
    answers it with 200, as the GraphQL-over-HTTP specification asks and as Apollo
    clients expect of PersistedQueryNotFound."""


@dataclass(frozen=True)
class _Runnable:
    document: DocumentNode
    operation: OperationDefinitionNode
    variables: dict[str, Any]
    coerced: VariableValues
    operation_name: str | None
    requested_cost: int
    plan: Plan | None


class Executor:
    def __init__(
        self,
        schema: Schema,
        settings: GatewaySettings,
        clients: Clients,
        *,
        safelist: Mapping[str, str] | None = None,
        loaders: type[Loaders] = Loaders,
    ) -> None:
        self.schema = schema
        self.settings = settings
        self.clients = clients
        self.loaders = loaders
        """What each request's DataLoaders are (a subclass changes how they batch)."""
        self.documents = DocumentCache(
            settings.document_cache_size, schema.version, max_bytes=settings.document_cache_bytes
        )
        self.persisted = PersistedQueries(
            cache_size=settings.persisted_query_cache_size,
            cache_bytes=settings.persisted_query_cache_bytes,
            safelist=safelist,
        )
        self.registrations = RegistrationRate(
            settings.persisted_query_registrations_per_second,
            settings.persisted_query_registration_burst,
        )
        self._rules = validation_rules(settings)
        self._debug = not settings.production

    def prepare(self, query_hash: str, query: str) -> PreparedDocument:
        """The prepared document from the cache, or prepared now and cached."""
        prepared = self.documents.get(query_hash)
        if prepared is None:
            prepared = prepare(self.schema.graphql, query, self.settings, self._rules)
            self.documents.put(query_hash, prepared)
        return prepared

    async def run(
        self,
        payload: Any,
        *,
        authorization: str | None,
        tenant: str | None = None,
        queries_only: bool = False,
        client_address: str | None = None,
    ) -> Outcome:
        """`payload`: the decoded JSON body ({query, variables, operationName, extensions});
        `tenant`: the X-Nova-Tenant header, passed on as x-nova-tenant (the services say
        whether it exists and the token belongs to it);
        `queries_only` for GET requests, which must not change anything; `client_address`:
        the HTTP client's IP, passed to the services (their sign-in rate limits) and the
        key of its persisted-query registration rate."""
        deadline = time.monotonic() + self.settings.request_timeout_seconds
        try:
            viewer = viewer_from_header(authorization)
            check_tenant_header(tenant)
            runnable = self._runnable(payload, queries_only, client_address)
        except _MutationOverGet as error:
            return Outcome(405, {"errors": [request_error(error)]}, 0.0)
        except BadRequest as error:
            return Outcome(400, {"errors": [request_error(error)]}, 0.0)
        except GatewayError as error:
            status = 401 if isinstance(error, Unauthenticated) else 400
            return Outcome(status, {"errors": [request_error(error)]}, 0.0, request_error=True)
        except _Rejected as rejected:
            return Outcome(400, {"errors": rejected.errors}, 0.0, request_error=True)
        backend = Backend(
            self.clients,
            authorization=viewer.authorization if viewer else None,
            tenant=tenant,
            deadline=deadline,
            client_address=client_address,
        )
        context = RequestContext(
            backend=backend,
            loaders=self.loaders(backend),
            viewer=viewer,
        )
        if runnable.plan is not None:
            result: Any = await run_plan(
                runnable.plan,
                schema=self.schema.graphql,
                operation=runnable.operation,
                variables=runnable.coerced,
                context=context,
                is_awaitable=_is_awaitable,
            )
        else:
            result = execute(
                self.schema.graphql,
                runnable.document,
                context_value=context,
                variable_values=runnable.variables,
                operation_name=runnable.operation_name,
                is_awaitable=_is_awaitable,
            )
            if isawaitable(result):
                result = await result
        assert isinstance(result, ExecutionResult)
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [format_error(error, self._debug) for error in result.errors]
        body["extensions"] = {
            "cost": {
                "requested": runnable.requested_cost,
                "actual": actual_cost(
                    self.schema.graphql, runnable.document, runnable.operation, result.data
                ),
                "maximum": self.settings.max_cost,
            }
        }
        return Outcome(200, body, backend.busy_seconds)

    def _runnable(self, payload: Any, queries_only: bool, client_address: str | None) -> _Runnable:
        query, variables, operation_name, extensions = _read(payload, self.settings)
        resolved = self.persisted.resolve(query, extensions)
        prepared = self.prepare(resolved.hash, resolved.text)
        if prepared.errors:
            raise _Rejected([format_error(error, self._debug) for error in prepared.errors])
        assert prepared.document is not None
        operation = get_operation_ast(prepared.document, operation_name)
        if operation is None:
            message = (
                f"the document has no operation named {operation_name[:100]!r}"
                if operation_name
                else "the document has several operations: name one in operationName"
            )
            unresolved = GraphQLError(message, extensions={"code": "OPERATION_RESOLUTION_FAILURE"})
            raise _Rejected([format_error(unresolved, self._debug)])
        if queries_only and operation.operation is not OperationType.QUERY:
            raise _MutationOverGet("GET requests run queries only; send mutations with POST")
        # A valid document is registered whatever its variables, once per hash, within the
        # client address's rate (gateway/registration_rate.py says why it still runs).
        if (
            resolved.register
            and resolved.hash not in self.persisted
            and self.registrations.allow(client_address)
        ):
            self.persisted.register(resolved.hash, resolved.text)
        coerced = get_variable_values(
            self.schema.graphql, operation.variable_definitions or (), variables
        )
        if isinstance(coerced, list):
            raise _Rejected(
                [format_error(coded(error, "BAD_USER_INPUT"), self._debug) for error in coerced]
            )
        cost = check_cost(self.schema.graphql, prepared.document, operation, coerced, self.settings)
        plan = prepared.plans.get(operation.name.value if operation.name else None)
        return _Runnable(
            prepared.document, operation, variables, coerced, operation_name, cost, plan
        )


def _is_awaitable(value: Any) -> TypeGuard[Awaitable[Any]]:
    """What graphql-core asks of every value a field resolves to. The gateway's resolvers
    return a coroutine, an asyncio Future (a DataLoader's load, a gather) or a value;
    graphql-core's own check also looks for `__await__` on every protobuf message and
    string, which cost 4% of the gateway's CPU on a feed page."""
    return isinstance(value, CoroutineType | asyncio.Future)


class _Rejected(Exception):
    """GraphQL request errors (already formatted) that stop a request before execution."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors


class _MutationOverGet(BadRequest):
    """GET is safe: the GraphQL-over-HTTP specification asks for 405 (and an Allow
    header), not 400."""


def _read(
    payload: Any, settings: GatewaySettings
) -> tuple[str | None, dict[str, Any], str | None, dict[str, Any] | None]:
    if isinstance(payload, list):
        raise BadRequest("batched requests are not supported: send one operation per request")
    if not isinstance(payload, dict):
        raise BadRequest("the body must be a JSON object: {query, variables, operationName}")
    query = payload.get("query")
    variables = payload.get("variables")
    operation_name = payload.get("operationName")
    extensions = payload.get("extensions")
    if query is not None and not isinstance(query, str):
        raise BadRequest("query must be a string")
    if variables is not None and not isinstance(variables, dict):
        raise BadRequest("variables must be an object or null")
    if operation_name is not None and not isinstance(operation_name, str):
        raise BadRequest("operationName must be a string or null")
    if extensions is not None and not isinstance(extensions, dict):
        raise BadRequest("extensions must be an object or null")
    if query is not None:
        check_unicode("the query", query)
    if operation_name is not None:
        check_unicode("operationName", operation_name)
    if variables:
        check_variables(variables, settings)
    return query, variables or {}, operation_name, extensions
