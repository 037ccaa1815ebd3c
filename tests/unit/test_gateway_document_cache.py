"""The document cache: bounded by entries and by estimated bytes, keyed by query hash and
schema version, keeps failures; and the estimate covers what documents really hold."""

import gc
import tracemalloc

import pytest
from graphql import GraphQLError, parse

from gateway.document_cache import DocumentCache, PreparedDocument
from gateway.documents import prepare, validation_rules
from gateway.schema import build_schema
from gateway.settings import GatewaySettings

ENTRY_BYTES = 200
"""The cache's own cost per entry, besides the document's estimate."""

RUNNABLE = PreparedDocument(parse("{ viewer { id } }"), ())
BROKEN = PreparedDocument(None, (GraphQLError("Syntax Error"),))


def test_a_repeated_query_is_a_hit_and_a_new_one_a_miss() -> None:
    cache = DocumentCache(10, schema_version="v1", max_bytes=2**20)
    assert cache.get("a") is None
    cache.put("a", RUNNABLE)
    assert cache.get("a") is RUNNABLE
    assert (cache.hits, cache.misses) == (1, 1)


def test_failures_are_kept_too() -> None:
    cache = DocumentCache(10, schema_version="v1", max_bytes=2**20)
    cache.put("broken", BROKEN)
    assert cache.get("broken") is BROKEN


def test_the_least_recently_used_entry_goes_first_when_full() -> None:
    cache = DocumentCache(2, schema_version="v1", max_bytes=2**20)
    cache.put("a", RUNNABLE)
    cache.put("b", RUNNABLE)
    cache.get("a")
    cache.put("c", RUNNABLE)
    assert len(cache) == 2
    assert cache.get("b") is None
    assert cache.get("a") is RUNNABLE
    assert cache.get("c") is RUNNABLE


def test_size_zero_keeps_nothing() -> None:
    cache = DocumentCache(0, schema_version="v1", max_bytes=2**20)
    cache.put("a", RUNNABLE)
    assert cache.get("a") is None
    assert len(cache) == 0


def test_entries_of_one_schema_version_are_not_used_with_another() -> None:
    old = DocumentCache(10, schema_version="v1", max_bytes=2**20)
    old.put("a", RUNNABLE)
    # A cache for another schema shares nothing, even with the same query hashes.
    new = DocumentCache(10, schema_version="v2", max_bytes=2**20)
    assert new.get("a") is None


def sized(bytes_: int) -> PreparedDocument:
    return PreparedDocument(None, (GraphQLError("refused"),), bytes_)


def test_the_oldest_entries_go_once_the_bytes_pass_the_bound() -> None:
    entry = 1000 + ENTRY_BYTES
    cache = DocumentCache(100, schema_version="v1", max_bytes=3 * entry)
    for key in "abc":
        cache.put(key, sized(1000))
    assert (len(cache), cache.bytes) == (3, 3 * entry)
    cache.get("a")
    cache.put("d", sized(1000))
    assert cache.bytes == 3 * entry
    assert [cache.get(key) is not None for key in "abcd"] == [True, False, True, True]
    cache.put("big", sized(2 * entry))
    assert cache.bytes <= 3 * entry
    assert cache.get("big") is not None


def test_a_document_larger_than_the_whole_bound_is_not_kept() -> None:
    cache = DocumentCache(100, schema_version="v1", max_bytes=10_000)
    cache.put("a", sized(1000))
    cache.put("huge", sized(10_000))
    assert cache.get("huge") is None
    assert cache.get("a") is not None
    assert cache.bytes == 1000 + ENTRY_BYTES


def test_putting_a_key_again_replaces_its_bytes() -> None:
    cache = DocumentCache(100, schema_version="v1", max_bytes=100_000)
    cache.put("a", sized(1000))
    cache.put("a", sized(5000))
    assert (len(cache), cache.bytes) == (1, 5000 + ENTRY_BYTES)


def test_zero_bytes_keeps_nothing() -> None:
    cache = DocumentCache(100, schema_version="v1", max_bytes=0)
    cache.put("a", RUNNABLE)
    assert (cache.get("a"), len(cache), cache.bytes) == (None, 0, 0)


EMOJI_ARGUMENT = '{ __type(name: "' + "\U0001f600" * 4990 + '") { name } }'
MEASURED = {
    "fields": "{ viewer { " + " ".join(f"a{i}: handle" for i in range(100)) + " } }",
    "comments": "{ __typename " + "#\n" * 990 + "}",
    "validation errors": "{ " + " ".join(f"f{i}" for i in range(200)) + " }",
    "an emoji argument": EMOJI_ARGUMENT,
    "the feed query": (
        "query($n: Int!) { homeFeed(first: $n) { edges { cursor node { id text author "
        "{ handle } likeCount commentCount viewerHasLiked comments(first: 3) { text author "
        "{ handle } } } } pageInfo { hasNextPage endCursor } } }"
    ),
    "a parse failure": "{ " + "a " * 500 + ")",
    "a limit's refusal": "{" + " a" * 1001 + "}",
}


@pytest.mark.parametrize("query", MEASURED.values(), ids=MEASURED.keys())
def test_the_estimate_covers_what_a_prepared_document_holds(query: str) -> None:
    """tracemalloc's count of what 5 more distinct prepared documents keep alive, against
    their estimates (the numbers gateway/document_cache.py's docstring reports). The
    first 5 fill what graphql-core keeps of its last validations, which is not theirs."""
    schema = build_schema().graphql
    settings = GatewaySettings(max_aliases=1000)
    rules = validation_rules(settings)
    gc.collect()
    tracemalloc.start()
    try:
        kept = [prepare(schema, query + " " * i, settings, rules) for i in range(5)]
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        kept += [prepare(schema, query + " " * i, settings, rules) for i in range(5, 10)]
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    estimated = sum(prepared.size for prepared in kept[5:])
    assert held <= estimated, f"{held} bytes held, {estimated} estimated"
