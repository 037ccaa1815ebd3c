"""A bounded LRU of prepared documents, so a repeated query skips parse and validate.

Keyed by the SHA-256 of the query text (the hash persisted queries use too) and the
schema version: an entry is only ever used with the schema it was validated against.
Failures are kept as well, so a client repeating a broken or over-limit query costs a
dictionary lookup. One cache serves one gateway, whose limits do not change while it
runs, so a kept limit verdict stays right.

The cache is bounded twice: by entries, and by the bytes its entries are estimated to
hold, so a client sending large distinct queries evicts the oldest instead of growing
the process. Each PreparedDocument carries its estimate, made where it was prepared, of
what it keeps alive:

- a parsed document keeps its text (as the Source's body, and again in the values of
  its string tokens) and, through every node's location, the whole linked list of
  tokens, comments included. tracemalloc over 40 distinct documents of each kind
  (graphql-core 3.3, CPython 3.11) measured, besides twice the text, 180 bytes per
  token for comments, 380-610 for fields and 440-880 for small documents (the 53-token
  feed query holds 24 KB in all; a 20 KB string argument 50 KB). `document_bytes`
  counts 3 texts and 800 bytes a token: over every case measured, by 10-80% for
  fields, 4x for comments. Validation errors (at most 101, graphql-core stops there)
  hold up to 2 KB each, their nodes and locations: `ERROR_BYTES` each on top;
- a parse failure keeps its text (the error's source) and the error:
  `parse_failure_bytes`;
- a limit's refusal keeps one error, without the document: `ERROR_BYTES`;
- a valid document keeps a plan per query (gateway/plans.py), at most one planned field
  per token: `PLAN_BYTES_PER_FIELD` each.

An entry's size is `sys.getsizeof` of the text, which is 4 bytes a character once one
character is an emoji, so a text's real footprint is what is counted.
"""

import sys
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from graphql import DocumentNode, GraphQLError

from gateway.plans import Plan

TEXT_COPIES = 3
BYTES_PER_TOKEN = 800
ERROR_BYTES = 2048
PLAN_BYTES_PER_FIELD = 500
"""tracemalloc measured 360 on the feed query's plan (tests/unit/test_gateway_plans.py)."""
_ENTRY_BYTES = 200
"""The key (a 64-character hash and the schema version) and the LRU's link."""


def document_bytes(query: str, tokens: int) -> int:
    """What a parsed document of `query`, with its `tokens` (comments included), holds."""
    return TEXT_COPIES * sys.getsizeof(query) + BYTES_PER_TOKEN * tokens


def parse_failure_bytes(query: str) -> int:
    """What a parse failure of `query` holds: its text, as the error's source, and the
    error."""
    return sys.getsizeof(query) + ERROR_BYTES


@dataclass(frozen=True)
class PreparedDocument:
    document: DocumentNode | None
    """None when parsing failed or a limit stopped it before parsing."""
    errors: tuple[GraphQLError, ...]
    """Empty when the document may run."""
    size: int = ERROR_BYTES
    """Estimated bytes it holds: document_bytes, parse_failure_bytes, or ERROR_BYTES for
    a refusal that keeps only its error."""
    plans: Mapping[str | None, Plan | None] = field(default_factory=dict)
    """Each operation's plan by name (None: the anonymous one); None for graphql-core to
    run it (gateway/plans.py)."""


class DocumentCache:
    def __init__(self, size: int, schema_version: str, *, max_bytes: int) -> None:
        """size or max_bytes 0 keeps nothing (every lookup misses); a document estimated
        over max_bytes on its own is not kept."""
        self._size = size
        self._max_bytes = max_bytes
        self._schema_version = schema_version
        self._entries: OrderedDict[tuple[str, str], PreparedDocument] = OrderedDict()
        self.bytes = 0
        """The estimated bytes of the entries kept, at most max_bytes."""
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
        cost = prepared.size + _ENTRY_BYTES
        if self._size == 0 or cost > self._max_bytes:
            return
        key = (query_hash, self._schema_version)
        replaced = self._entries.pop(key, None)
        if replaced is not None:
            self.bytes -= replaced.size + _ENTRY_BYTES
        self._entries[key] = prepared
        self.bytes += cost
        while len(self._entries) > self._size or self.bytes > self._max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.size + _ENTRY_BYTES
