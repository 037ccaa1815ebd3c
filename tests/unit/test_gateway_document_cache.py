"""The document cache: bounded, keyed by query hash and schema version, keeps failures."""

from graphql import GraphQLError, parse

from gateway.document_cache import DocumentCache, PreparedDocument

RUNNABLE = PreparedDocument(parse("{ viewer { id } }"), ())
BROKEN = PreparedDocument(None, (GraphQLError("Syntax Error"),))


def test_a_repeated_query_is_a_hit_and_a_new_one_a_miss() -> None:
    cache = DocumentCache(10, schema_version="v1")
    assert cache.get("a") is None
    cache.put("a", RUNNABLE)
    assert cache.get("a") is RUNNABLE
    assert (cache.hits, cache.misses) == (1, 1)


def test_failures_are_kept_too() -> None:
    cache = DocumentCache(10, schema_version="v1")
    cache.put("broken", BROKEN)
    assert cache.get("broken") is BROKEN


def test_the_least_recently_used_entry_goes_first_when_full() -> None:
    cache = DocumentCache(2, schema_version="v1")
    cache.put("a", RUNNABLE)
    cache.put("b", RUNNABLE)
    cache.get("a")
    cache.put("c", RUNNABLE)
    assert len(cache) == 2
    assert cache.get("b") is None
    assert cache.get("a") is RUNNABLE
    assert cache.get("c") is RUNNABLE


def test_size_zero_keeps_nothing() -> None:
    cache = DocumentCache(0, schema_version="v1")
    cache.put("a", RUNNABLE)
    assert cache.get("a") is None
    assert len(cache) == 0


def test_entries_of_one_schema_version_are_not_used_with_another() -> None:
    old = DocumentCache(10, schema_version="v1")
    old.put("a", RUNNABLE)
    # A cache for another schema shares nothing, even with the same query hashes.
    new = DocumentCache(10, schema_version="v2")
    assert new.get("a") is None
