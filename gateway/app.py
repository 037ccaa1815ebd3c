"""The ASGI app: POST (and GET, for queries) /graphql, GraphiQL on GET /graphql where
introspection is on, and GET /healthz.

Ariadne serves GraphiQL, OPTIONS and the 405 for other methods; GraphQL requests are the
gateway's own, GraphQL over HTTP: the response's media type from Accept (406 when it
allows none the gateway has), a POST body only as application/json (415 otherwise), at
most max_body_bytes of it (413), then the Executor, which adds persisted queries, the
document cache and the limits that stock Ariadne lacks. Its Outcome gives the status for
application/graphql-response+json; application/json answers GraphQL request errors with
200.

| stopped by                                   | application/json | graphql-response+json |
| -------------------------------------------- | ---------------- | --------------------- |
| nothing: execution ran, even if fields failed | 200              | 200                   |
| a GraphQL request error: parse, validation,  | 200              | 400                   |
|   a limit, variables, the operation to run,  |                  |                       |
|   a persisted query's lookup                 |                  |                       |
| an Authorization header that is not a token  | 200              | 401                   |
| a body that is not a GraphQL request         | 400              | 400                   |
| a mutation sent with GET                     | 405              | 405                   |
"""

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from ariadne.asgi import GraphQL
from ariadne.asgi.handlers import GraphQLHTTPHandler
from ariadne.explorer import ExplorerGraphiQL
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.admission import Admission, Refused
from gateway.clients import Clients
from gateway.errors import BadRequest, GatewayError, Overloaded, RequestTooLarge, request_error
from gateway.execution import Executor
from gateway.loaders import Loaders
from gateway.media_types import GRAPHQL_RESPONSE, JSON, is_json_request, response_type
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
    admission: Admission


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
    admission = Admission(settings.admission)
    graphql = GraphQL(
        schema.graphql,
        http_handler=_Handler(executor, admission, observer, settings.max_body_bytes),
        introspection=settings.introspection_enabled,
        explorer=ExplorerGraphiQL(title="Nova"),
        debug=not settings.production,
    )
    asgi = Starlette(
        routes=[Route("/graphql", graphql), Route("/healthz", _healthz, methods=["GET"])]
    )
    return GatewayApp(asgi=asgi, executor=executor, admission=admission)


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


class _Handler(GraphQLHTTPHandler):
    """Ariadne's HTTP handler with the gateway's Executor in place of ariadne.graphql()."""

    def __init__(
        self, executor: Executor, admission: Admission, observer: Observer | None, max_body: int
    ) -> None:
        super().__init__()
        self._executor = executor
        self._admission = admission
        self._observer = observer
        self._max_body = max_body

    async def handle_request_override(self, request: Request) -> Response | None:
        # GET runs a query given as `query` or as a persisted query hash in `extensions`
        # (what Apollo's useGETForHashedQueries sends); a bare GET shows GraphiQL, and
        # other methods are Ariadne's (OPTIONS, 405).
        params = request.query_params
        is_get = request.method == "GET" and ("query" in params or "extensions" in params)
        if not is_get and request.method != "POST":
            return None
        media = response_type(request.headers.get("accept"))
        if media is None:
            return _refusal(
                406,
                BadRequest(
                    f"this endpoint answers {GRAPHQL_RESPONSE} or {JSON}, and the Accept "
                    "header allows neither"
                ),
                JSON,
            )
        try:
            async with self._admission.turn():
                try:
                    payload = _get_payload(request) if is_get else await self._post_payload(request)
                except _Refused as refused:
                    return _refusal(refused.status, refused.error, media)
                return await self._run(request, payload, media, queries_only=is_get)
        except Refused as refused:
            return _overloaded(refused, media)

    async def _post_payload(self, request: Request) -> Any:
        content_type = request.headers.get("content-type")
        if not is_json_request(content_type):
            raise _Refused(
                415,
                BadRequest(
                    f"send the request as Content-Type: {JSON} (UTF-8); got "
                    + (repr(content_type[:100]) if content_type else "none")
                ),
            )
        try:
            body = await _bounded(request, self._max_body)
        except RequestTooLarge as error:
            raise _Refused(413, error) from None
        return _decoded(body, "the request body")

    async def _run(
        self, request: Request, payload: Any, media: str, *, queries_only: bool
    ) -> Response:
        started = time.perf_counter()
        outcome = await self._executor.run(
            payload,
            authorization=request.headers.get("authorization"),
            tenant=request.headers.get("x-nova-tenant"),
            queries_only=queries_only,
            client_address=request.client.host if request.client else None,
        )
        status = 200 if outcome.request_error and media == JSON else outcome.status
        headers = {}
        if status == 405:
            headers["allow"] = "POST"
        if status == 401:
            headers["www-authenticate"] = "Bearer"
        response = _JSONResponse(
            outcome.body, status_code=status, headers=headers, media_type=_content_type(media)
        )
        if self._observer is not None:
            self._observer(RequestTiming(time.perf_counter() - started, outcome.backend_seconds))
        return response


class _JSONResponse(JSONResponse):
    """Rendered by orjson: a 20-post feed page is 21 KB of JSON, which the standard
    library's encoder writes in 130 µs and orjson in 9 µs. The same compact UTF-8; a
    GraphQL result holds no NaN or non-string key for the two to differ on."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class _Refused(Exception):
    """A request refused before it reached the Executor: its HTTP status and error."""

    def __init__(self, status: int, error: GatewayError) -> None:
        super().__init__(error.message)
        self.status = status
        self.error = error


def _get_payload(request: Request) -> dict[str, Any]:
    params = request.query_params
    return {
        "query": params.get("query"),
        "operationName": params.get("operationName"),
        "variables": _json_param(params, "variables"),
        "extensions": _json_param(params, "extensions"),
    }


def _refusal(status: int, error: GatewayError, media: str) -> Response:
    return _JSONResponse(
        {"errors": [request_error(error)]}, status_code=status, media_type=_content_type(media)
    )


_RETRY_AFTER_SECONDS = 1
"""HTTP's Retry-After counts whole seconds; a second is long next to a feed page, which
is the point: a client told to back off should let the queue drain."""


def _overloaded(refused: Refused, media: str) -> Response:
    error = Overloaded(
        f"the gateway is at capacity ({refused.in_flight} requests in progress, "
        f"{refused.queued} waiting); retry after {_RETRY_AFTER_SECONDS} s",
        retry_after_seconds=_RETRY_AFTER_SECONDS,
    )
    return _JSONResponse(
        {"errors": [request_error(error)]},
        status_code=503,
        headers={"retry-after": str(_RETRY_AFTER_SECONDS)},
        media_type=_content_type(media),
    )


def _content_type(media: str) -> str:
    return f"{media}; charset=utf-8"


def _decoded(raw: str | bytes, what: str) -> Any:
    """JSON (bytes in UTF-8, the one encoding GraphQL over HTTP allows), or a 400 that says
    what is wrong with it. A nesting too deep for the decoder (which recurses) is a 400
    too, not a RecursionError."""
    try:
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except ValueError:
        raise _Refused(400, BadRequest(f"{what} is not valid JSON")) from None
    except RecursionError:
        raise _Refused(400, BadRequest(f"{what} nests too deeply to decode")) from None


async def _bounded(request: Request, maximum: int) -> bytes:
    """The request's body, at most `maximum` bytes of it: a declared length over it is
    refused before reading, and a body without one (chunked) is refused as soon as it
    passes it, so no client makes the gateway hold more."""
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
    return bytes(body)


def _json_param(params: Mapping[str, str], name: str) -> Any:
    raw = params.get(name)
    return _decoded(raw, f"the {name} parameter") if raw else None
