"""Apollo's automatic persisted queries, and a safelist mode that runs only known documents.

APQ: a client sends `extensions.persistedQuery.sha256Hash` alone; an unknown hash answers
PersistedQueryNotFound and the client resends with the query text, which is registered
(once it has prepared without errors) for the hashes that follow. Registrations live in
an LRU per gateway process, bounded by entries and by the bytes of their texts and
hashes (`sys.getsizeof`: an emoji text holds 4 bytes a character); a client that meets
another process, or whose query was evicted, just registers again. How often one client
may register is the Executor's concern (gateway/registration_rate.py).

Safelist: the documents of an Apollo persisted query manifest are the only ones that
run, whether sent by hash or as text; nothing registers at run time.
"""

import hashlib
import json
import re
import sys
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import BadRequest, PersistedQueryNotFound, PersistedQueryNotInList

_SHA256 = re.compile(r"[0-9a-f]{64}")
_ENTRY_BYTES = 100
"""An LRU entry's link and slot, besides its text and hash."""


def sha256(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


@dataclass(frozen=True)
class ResolvedQuery:
    text: str
    hash: str
    register: bool
    """True when the client sent text for a hash to persist (APQ's second request)."""


class PersistedQueries:
    def __init__(
        self,
        *,
        cache_size: int,
        cache_bytes: int,
        safelist: Mapping[str, str] | None = None,
    ) -> None:
        self._size = cache_size
        self._max_bytes = cache_bytes
        self._safelist = safelist
        self._registered: OrderedDict[str, str] = OrderedDict()
        self.bytes = 0
        """The bytes of the registrations kept, at most cache_bytes."""

    def __len__(self) -> int:
        return len(self._registered)

    def __contains__(self, query_hash: object) -> bool:
        """Registered already (without refreshing it in the LRU)."""
        return query_hash in self._registered

    def resolve(self, query: str | None, extensions: Mapping[str, Any] | None) -> ResolvedQuery:
        """The query to run, from its text, its hash, or both."""
        persisted = (extensions or {}).get("persistedQuery")
        if persisted is None:
            if query is None:
                raise BadRequest("send a query, or a persistedQuery extension with its hash")
            query_hash = sha256(query)
            self._check_listed(query_hash)
            return ResolvedQuery(query, query_hash, register=False)
        query_hash = _hash_of(persisted)
        if query is None:
            text = self._lookup(query_hash)
            if text is None:
                raise PersistedQueryNotFound()
            return ResolvedQuery(text, query_hash, register=False)
        if sha256(query) != query_hash:
            raise BadRequest("provided sha does not match query")
        self._check_listed(query_hash)
        return ResolvedQuery(query, query_hash, register=self._safelist is None)

    def register(self, query_hash: str, query: str) -> None:
        """Keeps `query` for its hash, evicting the least recently used past either bound;
        a query over cache_bytes on its own is not kept."""
        cost = _bytes(query_hash, query)
        if self._size == 0 or cost > self._max_bytes:
            return
        replaced = self._registered.pop(query_hash, None)
        if replaced is not None:
            self.bytes -= _bytes(query_hash, replaced)
        self._registered[query_hash] = query
        self.bytes += cost
        while len(self._registered) > self._size or self.bytes > self._max_bytes:
            evicted_hash, evicted = self._registered.popitem(last=False)
            self.bytes -= _bytes(evicted_hash, evicted)

    def _lookup(self, query_hash: str) -> str | None:
        if self._safelist is not None:
            return self._safelist.get(query_hash)
        text = self._registered.get(query_hash)
        if text is not None:
            self._registered.move_to_end(query_hash)
        return text

    def _check_listed(self, query_hash: str) -> None:
        if self._safelist is not None and query_hash not in self._safelist:
            raise PersistedQueryNotInList(
                "this gateway runs only the documents on its safelist, and this is not one"
            )


def _bytes(query_hash: str, query: str) -> int:
    return sys.getsizeof(query) + sys.getsizeof(query_hash) + _ENTRY_BYTES


def _hash_of(persisted: Any) -> str:
    if not isinstance(persisted, dict) or persisted.get("version") != 1:
        raise BadRequest("persistedQuery must be {version: 1, sha256Hash: ...}")
    query_hash = persisted.get("sha256Hash")
    if not isinstance(query_hash, str) or not _SHA256.fullmatch(query_hash):
        raise BadRequest("persistedQuery.sha256Hash must be 64 lowercase hex digits")
    return query_hash


def load_safelist(path: Path) -> dict[str, str]:
    """hash -> document from an Apollo persisted query manifest (format
    "apollo-persisted-query-manifest", version 1); every id must be its body's SHA-256."""
    manifest = json.loads(path.read_text())
    if manifest.get("format") != "apollo-persisted-query-manifest":
        raise ValueError(f"{path} is not an Apollo persisted query manifest")
    safelist = {}
    for operation in manifest.get("operations", []):
        body = operation["body"]
        if operation["id"] != sha256(body):
            raise ValueError(
                f"{path}: operation {operation.get('name', operation['id'])!r} has an id "
                "that is not the SHA-256 of its body"
            )
        safelist[operation["id"]] = body
    return safelist
