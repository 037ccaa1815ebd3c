"""The gateway's knobs, in one frozen object with production-sensible defaults.

The process's NOVA_* configuration fills it in; tests and `./dev bench feed` build it
directly. Every limit is checked at construction, so a bad value fails at start.
"""

from dataclasses import dataclass, fields
from pathlib import Path

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
    max_query_length: int = 100_000
    """Characters of query text; longer ones are not even lexed."""
    max_tokens: int = 1000
    """Lexical tokens of a query, counted before it is parsed or validated (a 20-post
    feed query with comments is about 60; GraphiQL's introspection query about 200)."""
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
    persisted_query_cache_size: int = 10_000
    """Automatic persisted queries remembered by hash."""
    safelist: Path | None = None
    """An Apollo persisted query manifest; when set, only its documents run."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0 to 65535, got {self.port}")
        if self.request_timeout_seconds <= 0:
            raise ValueError(
                f"request_timeout_seconds must be positive, got {self.request_timeout_seconds}"
            )
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name.startswith("max_") and value < 1:
                raise ValueError(f"{field.name} must be at least 1, got {value}")
            if field.name.endswith("_cache_size") and value < 0:
                raise ValueError(f"{field.name} must not be negative, got {value}")

    @property
    def introspection_enabled(self) -> bool:
        return not self.production if self.introspection is None else self.introspection
