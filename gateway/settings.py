"""The gateway's knobs, in one frozen object with production-sensible defaults.

The process's NOVA_* configuration fills it in; tests and `./dev bench feed` build it
directly. Every limit is checked at construction, so a bad value fails at start.
"""

from dataclasses import dataclass, field, fields
from pathlib import Path

from gateway.admission import AdmissionSettings

DEFAULT_PORT = 8080


@dataclass(frozen=True)
class GatewaySettings:
    port: int = DEFAULT_PORT
    """HTTP port; 0 picks a free one."""
    production: bool = False
    """Production mode: introspection and GraphiQL off (unless `introspection` says
    otherwise) and no stack traces in errors."""
    introspection: bool | None = None
    """None: on in development, off in production."""
    request_timeout_seconds: float = 10.0
    """The request's deadline; every RPC made for the request gets what is left of it."""
    max_body_bytes: int = 1_048_576
    """Bytes of a request body; a longer one is answered 413 before it is parsed, and is
    never read whole (the body holds the query and its variables)."""
    max_query_length: int = 20_000
    """UTF-8 bytes of query text (an emoji is 4); longer ones are not even lexed. Real
    clients' documents are a few KB: GraphiQL's introspection query is 1,500 bytes."""
    max_tokens: int = 1000
    """Lexical tokens of a query, comments included, counted before it is parsed or
    validated (a 20-post feed query is about 60; GraphiQL's introspection query about
    200)."""
    max_operations: int = 10
    """Operation definitions in one document (one runs; the rest are still validated)."""
    max_fragments: int = 100
    """Fragment definitions in one document."""
    max_variables_depth: int = 10
    """Nesting of the variables JSON: a variable's value is at depth 1, what an object or
    list holds one deeper (`{"input": {"interests": ["jazz"]}}` reaches 3, the most the
    schema's input types need)."""
    max_variable_values: int = 1100
    """JSON values in the variables, every object, list and scalar counted."""
    max_depth: int = 10
    """Nesting of fields (introspection fields excluded: validation bounds those)."""
    max_aliases: int = 30
    """Aliased fields, counting each fragment spread as often as it is spread."""
    max_cost: int = 2000
    """Objects a query may ask for, with list sizes from the variables multiplied in."""
    max_page_size: int = 100
    """Largest `first` of any connection (the services' own page limit)."""
    document_cache_size: int = 1000
    """Prepared documents kept; 0 turns the cache off."""
    document_cache_bytes: int = 16 * 2**20
    """Estimated memory of the prepared documents kept (gateway/document_cache.py says
    how it is estimated); 0 turns the cache off."""
    persisted_query_cache_size: int = 10_000
    """Automatic persisted queries remembered by hash."""
    persisted_query_cache_bytes: int = 16 * 2**20
    """Memory of the automatic persisted queries' texts and hashes."""
    persisted_query_registrations_per_second: int = 10
    """Automatic persisted queries one client address may register a second, on average;
    past that (and its burst) a query still runs but is not registered."""
    persisted_query_registration_burst: int = 50
    """Registrations one client address may make at once."""
    safelist: Path | None = None
    """An Apollo persisted query manifest; when set, only its documents run."""
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    """Requests executing at once per process, and how long the next ones may wait."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0 to 65535, got {self.port}")
        if self.request_timeout_seconds <= 0:
            raise ValueError(
                f"request_timeout_seconds must be positive, got {self.request_timeout_seconds}"
            )
        for each in fields(self):
            value = getattr(self, each.name)
            if each.name.startswith("max_") and value < 1:
                raise ValueError(f"{each.name} must be at least 1, got {value}")
            if each.name.endswith(("_cache_size", "_cache_bytes")) and value < 0:
                raise ValueError(f"{each.name} must not be negative, got {value}")
            if each.name.startswith("persisted_query_registration") and value < 1:
                raise ValueError(f"{each.name} must be at least 1, got {value}")

    @property
    def introspection_enabled(self) -> bool:
        return not self.production if self.introspection is None else self.introspection
