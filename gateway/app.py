"""The ASGI app: POST (and GET, for queries) /graphql, GraphiQL on GET /graphql where
introspection is on, and GET /healthz.

Ariadne serves the HTTP side (body decoding, GraphiQL, OPTIONS); the request itself runs
through the gateway's Executor, which adds persisted queries, the document cache and the
limits that stock Ariadne lacks.
"""

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ariadne.asgi import GraphQL
from ariadne.asgi.handlers import GraphQLHTTPHandler
from ariadne.exceptions import HttpError
from ariadne.explorer import ExplorerGraphiQL
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message

from gateway.clients import Clients
from gateway.errors import RequestTooLarge, request_error
from gateway.execution import Executor
from gateway.loaders import Loaders
from gateway.persisted_queries import load_safelist
from gateway.schema import build_schema
from gateway.settings import GatewaySettings


@dataclass(frozen=True)
class RequestTiming:
    """What one request cost, for `./dev bench feed`."""

    total_seconds: float
    """From the request's JSON to the response object, inside the gateway."""
    backend_seconds: float
    """Of which at least one RPC was in flight."""


Observer = Callable[[RequestTiming], None]


@dataclass(frozen=True)
class GatewayApp:
    asgi: Starlette
    executor: Executor
    """Its document cache and persisted queries, for tests and the benchmark."""


def build_app(
    settings: GatewaySettings,
    clients: Clients,
    *,
    observer: Observer | None = None,
    loaders: type[Loaders] = Loaders,
) -> GatewayApp:
    """The gateway over open clients; `observer` sees the timing of every request, and
    `loaders` is the class of each request's DataLoaders."""
    safelist = load_safelist(settings.safelist) if settings.safelist else None
    schema = build_schema()
    executor = Executor(schema, settings, clients, safelist=safelist, loaders=loaders)
    graphql = GraphQL(
        schema.graphql,
        http_handler=_Handler(executor, observer, settings.max_body_bytes),
        introspection=settings.introspection_enabled,
        explorer=ExplorerGraphiQL(title="Nova"),
        debug=not settings.production,
    )
    asgi = Starlette(
        routes=[Route("/graphql", graphql), Route("/healthz", _healthz, methods=["GET"])]
    )
    return GatewayApp(asgi=asgi, executor=executor)


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


class _Handler(GraphQLHTTPHandler):
    """Ariadne's HTTP handler with the gateway's Executor in place of ariadne.graphql()."""

    def __init__(self, executor: Executor, observer: Observer | None, max_body: int) -> None:
        super().__init__()
        self._executor = executor
        self._observer = observer
        self._max_body = max_body

    async def handle_request_override(self, request: Request) -> Response | None:
        # GET runs a query given as `query` or as a persisted query hash in `extensions`
        # (what Apollo's useGETForHashedQueries sends); a bare GET shows GraphiQL.
        params = request.query_params
        if request.method == "GET" and ("query" in params or "extensions" in params):
            try:
                payload = {
                    "query": params.get("query"),
                    "operationName": params.get("operationName"),
                    "variables": _json_param(params, "variables"),
                    "extensions": _json_param(params, "extensions"),
                }
            except ValueError as error:
                return PlainTextResponse(str(error), status_code=400)
            return await self._run(request, payload, queries_only=True)
        return None

    async def graphql_http_server(self, request: Request) -> Response:
        try:
            bounded = await _bounded(request, self._max_body)
        except RequestTooLarge as error:
            return JSONResponse({"errors": [request_error(error)]}, status_code=413)
        try:
            payload = await self.extract_data_from_request(bounded)
        except HttpError as error:
            return PlainTextResponse(error.message or error.status, status_code=400)
        return await self._run(request, payload, queries_only=False)

    async def _run(self, request: Request, payload: Any, *, queries_only: bool) -> Response:
        started = time.perf_counter()
        outcome = await self._executor.run(
            payload,
            authorization=request.headers.get("authorization"),
            queries_only=queries_only,
        )
        response = JSONResponse(outcome.body, status_code=outcome.status)
        if self._observer is not None:
            self._observer(RequestTiming(time.perf_counter() - started, outcome.backend_seconds))
        return response


async def _bounded(request: Request, maximum: int) -> Request:
    """The request with its body read, at most `maximum` bytes of it: a declared length
    over it is refused before reading, and a body without one (chunked) is refused as
    soon as it passes it, so no client makes the gateway hold more."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > maximum):
        raise RequestTooLarge(
            f"the request body is {declared} bytes; at most {maximum} are accepted",
            value=int(declared) if declared.isdigit() else None,
            maximum=maximum,
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > maximum:
            raise RequestTooLarge(
                f"the request body is over {maximum} bytes, the most accepted",
                value=None,
                maximum=maximum,
            )
    whole, replayed = bytes(body), False

    async def replay() -> Message:
        """The body as one message, then what the server says next (a disconnect)."""
        nonlocal replayed
        if replayed:
            return await request.receive()
        replayed = True
        return {"type": "http.request", "body": whole, "more_body": False}

    return Request(request.scope, receive=replay)


def _json_param(params: Mapping[str, str], name: str) -> Any:
    raw = params.get(name)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError(f"the {name} parameter is not valid JSON") from None
