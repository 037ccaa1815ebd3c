"""GraphQL over HTTP's media types: which one a response uses (the request's Accept) and
which request bodies the gateway reads (its Content-Type).

A response is `application/graphql-response+json` when the client lists it at least as
high as `application/json`, and `application/json` for a client that names only that, a
wildcard, or nothing (a legacy client, as the GraphQL-over-HTTP audits expect:
`*/*` and a missing Accept get application/json). An Accept that allows neither gets
406. The media type decides the status of a GraphQL request error (gateway/app.py).

Request bodies are `application/json` in UTF-8, the one encoding the specification
requires: anything else, multipart included (the schema has no uploads, and a form post
is the body a cross-site page can send without asking), is 415.
"""

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
MAX_ACCEPT_RANGES = 32
"""Media ranges read from one Accept header; browsers send about 6."""


def response_type(accept: str | None) -> str | None:
    """The media type to answer in, or None when the Accept header allows neither."""
    if accept is None or not accept.strip():
        return JSON
    quality: dict[str, float] = {}
    for media_range in accept.split(",", MAX_ACCEPT_RANGES)[:MAX_ACCEPT_RANGES]:
        name, _, parameters = media_range.partition(";")
        name = name.strip().lower()
        if name:
            quality[name] = max(quality.get(name, 0.0), _quality(parameters))
    # The most specific range that matches a type decides its quality; a wildcard alone
    # means application/json, the legacy clients' type.
    wildcard = next((quality[n] for n in ("application/*", "*/*") if n in quality), 0.0)
    graphql = quality.get(GRAPHQL_RESPONSE, wildcard)
    json = quality.get(JSON, wildcard)
    if GRAPHQL_RESPONSE in quality and graphql > 0 and graphql >= json:
        return GRAPHQL_RESPONSE
    if json > 0:
        return JSON
    if graphql > 0:
        return GRAPHQL_RESPONSE
    return None


def _quality(parameters: str) -> float:
    for parameter in parameters.split(";"):
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "q":
            try:
                weight = float(value.strip())
            except ValueError:
                return 0.0
            return min(max(weight, 0.0), 1.0) if weight == weight else 0.0  # NaN: 0
    return 1.0


def is_json_request(content_type: str | None) -> bool:
    """True for `application/json`, with no charset or `charset=utf-8`."""
    if content_type is None:
        return False
    name, _, parameters = content_type.partition(";")
    if name.strip().lower() != JSON:
        return False
    for parameter in parameters.split(";"):
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            return False
    return True
