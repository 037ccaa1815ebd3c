"""One GraphQL request from its JSON to the response's JSON: persisted query lookup,
the document cache, limits, then execution against the services.

Everything before execution runs without a backend call, so a request that breaks a
limit, fails validation or names an unknown persisted query costs no RPC.
"""

import time
from collections.abc import Mapping
from dataclasses import dataclass
from inspect import isawaitable
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    OperationDefinitionNode,
    OperationType,
    execute,
    get_operation_ast,
)
from graphql.execution.values import get_variable_values

from gateway.auth import viewer_from_header
from gateway.clients import Backend, Clients
from gateway.context import RequestContext
from gateway.document_cache import DocumentCache, PreparedDocument
from gateway.documents import prepare, validation_rules
from gateway.errors import (
    BadRequest,
    GatewayError,
    PersistedQueryNotFound,
    coded,
    format_error,
    request_error,
)
from gateway.limits import actual_cost, check_cost
from gateway.loaders import Loaders
from gateway.persisted_queries import PersistedQueries
from gateway.schema import Schema
from gateway.settings import GatewaySettings


@dataclass(frozen=True)
class Outcome:
    status: int
    """HTTP status: 200 once execution ran (even if every field failed) and for
    PersistedQueryNotFound (which Apollo clients expect as a normal reply); 400 for a
    request rejected before execution."""
    body: dict[str, Any]
    backend_seconds: float
    """Time during which at least one RPC of the request was in flight."""


@dataclass(frozen=True)
class _Runnable:
    document: DocumentNode
    operation: OperationDefinitionNode
    variables: dict[str, Any]
    operation_name: str | None
    requested_cost: int


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
        self.documents = DocumentCache(settings.document_cache_size, schema.version)
        self.persisted = PersistedQueries(
            cache_size=settings.persisted_query_cache_size, safelist=safelist
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
        self, payload: Any, *, authorization: str | None, queries_only: bool = False
    ) -> Outcome:
        """`payload`: the decoded JSON body ({query, variables, operationName, extensions});
        `queries_only` for GET requests, which must not change anything."""
        deadline = time.monotonic() + self.settings.request_timeout_seconds
        try:
            viewer = viewer_from_header(authorization)
            runnable = self._runnable(payload, queries_only)
        except GatewayError as error:
            status = 200 if isinstance(error, PersistedQueryNotFound) else 400
            return Outcome(status, {"errors": [request_error(error)]}, 0.0)
        except _Rejected as rejected:
            return Outcome(400, {"errors": rejected.errors}, 0.0)
        backend = Backend(
            self.clients,
            authorization=viewer.authorization if viewer else None,
            deadline=deadline,
        )
        context = RequestContext(
            backend=backend,
            loaders=self.loaders(backend),
            viewer=viewer,
        )
        result = execute(
            self.schema.graphql,
            runnable.document,
            context_value=context,
            variable_values=runnable.variables,
            operation_name=runnable.operation_name,
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
                "actual": actual_cost(runnable.document, runnable.operation, result.data),
                "maximum": self.settings.max_cost,
            }
        }
        return Outcome(200, body, backend.busy_seconds)

    def _runnable(self, payload: Any, queries_only: bool) -> _Runnable:
        query, variables, operation_name, extensions = _read(payload)
        resolved = self.persisted.resolve(query, extensions)
        prepared = self.prepare(resolved.hash, resolved.text)
        if prepared.errors:
            raise _Rejected([format_error(error, self._debug) for error in prepared.errors])
        assert prepared.document is not None
        if resolved.register:
            self.persisted.register(resolved.hash, resolved.text)
        operation = get_operation_ast(prepared.document, operation_name)
        if operation is None:
            raise BadRequest(
                f"the document has no operation named {operation_name!r}"
                if operation_name
                else "the document has several operations: name one in operationName"
            )
        if queries_only and operation.operation is not OperationType.QUERY:
            raise BadRequest("GET requests run queries only; send mutations with POST")
        coerced = get_variable_values(
            self.schema.graphql, operation.variable_definitions or (), variables
        )
        if isinstance(coerced, list):
            raise _Rejected(
                [format_error(coded(error, "BAD_USER_INPUT"), self._debug) for error in coerced]
            )
        cost = check_cost(self.schema.graphql, prepared.document, operation, coerced, self.settings)
        return _Runnable(prepared.document, operation, variables, operation_name, cost)


class _Rejected(Exception):
    """Errors (already formatted) that stop a request before execution."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors


def _read(payload: Any) -> tuple[str | None, dict[str, Any], str | None, dict[str, Any] | None]:
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
    if variables:
        _check_unicode(variables)
    return query, variables or {}, operation_name, extensions


def _check_unicode(variables: dict[str, Any]) -> None:
    """Refuses a variable holding an unpaired surrogate (JSON's "\\ud800" escape allows
    one; it is not Unicode text, and no service could be sent it). Walked without
    recursion: a client chooses how deeply its JSON nests."""
    pending: list[tuple[str, Any]] = [(f"${name}", value) for name, value in variables.items()]
    while pending:
        where, value = pending.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError:
                    raise BadRequest(
                        f"variable {where} contains an unpaired surrogate, which is not "
                        "Unicode text"
                    ) from None
        elif isinstance(value, dict):
            pending.extend((f"{where}.{key}", item) for key, item in value.items())
        elif isinstance(value, list):
            pending.extend((f"{where}[{index}]", item) for index, item in enumerate(value))
