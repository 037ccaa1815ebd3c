"""A bounded LRU of prepared documents, so a repeated query skips parse and validate.

Keyed by the SHA-256 of the query text (the hash persisted queries use too) and the
schema version: an entry is only ever used with the schema it was validated against.
Failures are kept as well, so a client repeating a broken or over-limit query costs a
dictionary lookup. One cache serves one gateway, whose limits do not change while it
runs, so a kept limit verdict stays right.
"""

from collections import OrderedDict
from dataclasses import dataclass

from graphql import DocumentNode, GraphQLError


@dataclass(frozen=True)
class PreparedDocument:
    document: DocumentNode | None
    """None when parsing failed or a limit stopped it before parsing."""
    errors: tuple[GraphQLError, ...]
    """Empty when the document may run."""


class DocumentCache:
    def __init__(self, size: int, schema_version: str) -> None:
        """size 0 keeps nothing (every lookup misses)."""
        self._size = size
        self._schema_version = schema_version
        self._entries: OrderedDict[tuple[str, str], PreparedDocument] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, query_hash: str) -> PreparedDocument | None:
        key = (query_hash, self._schema_version)
        prepared = self._entries.get(key)
        if prepared is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return prepared

    def put(self, query_hash: str, prepared: PreparedDocument) -> None:
        if self._size == 0:
            return
        key = (query_hash, self._schema_version)
        self._entries[key] = prepared
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
