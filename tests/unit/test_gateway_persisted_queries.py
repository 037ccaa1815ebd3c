"""Automatic persisted queries and safelist mode, as a client sees the protocol."""

import json
import sys
from pathlib import Path

import pytest

from gateway.errors import BadRequest, PersistedQueryNotFound, PersistedQueryNotInList
from gateway.persisted_queries import PersistedQueries, load_safelist, sha256

QUERY = "{ viewer { id } }"
HASH = sha256(QUERY)


def extension(query_hash: str = HASH) -> dict[str, object]:
    return {"persistedQuery": {"version": 1, "sha256Hash": query_hash}}


def test_an_unknown_hash_asks_for_the_text_then_the_hash_alone_works() -> None:
    persisted = PersistedQueries(cache_size=10, cache_bytes=2**20)
    with pytest.raises(PersistedQueryNotFound) as missing:
        persisted.resolve(None, extension())
    assert missing.value.message == "PersistedQueryNotFound"
    assert missing.value.extensions == {"code": "PERSISTED_QUERY_NOT_FOUND"}

    resolved = persisted.resolve(QUERY, extension())
    assert (resolved.text, resolved.hash, resolved.register) == (QUERY, HASH, True)
    persisted.register(resolved.hash, resolved.text)

    again = persisted.resolve(None, extension())
    assert (again.text, again.register) == (QUERY, False)


def test_a_hash_that_does_not_match_the_text_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="provided sha does not match query"):
        PersistedQueries(cache_size=10, cache_bytes=2**20).resolve(QUERY, extension("0" * 64))


@pytest.mark.parametrize(
    "persisted",
    [{"version": 2, "sha256Hash": HASH}, {"version": 1, "sha256Hash": "nope"}, "x"],
)
def test_a_malformed_extension_is_a_bad_request(persisted: object) -> None:
    with pytest.raises(BadRequest):
        PersistedQueries(cache_size=10, cache_bytes=2**20).resolve(
            None, {"persistedQuery": persisted}
        )


def test_registrations_are_bounded() -> None:
    persisted = PersistedQueries(cache_size=1, cache_bytes=2**20)
    persisted.register(HASH, QUERY)
    other = "{ viewer { handle } }"
    persisted.register(sha256(other), other)
    with pytest.raises(PersistedQueryNotFound):
        persisted.resolve(None, extension())


def test_plain_queries_pass_through_without_registering() -> None:
    resolved = PersistedQueries(cache_size=10, cache_bytes=2**20).resolve(QUERY, None)
    assert (resolved.text, resolved.hash, resolved.register) == (QUERY, HASH, False)


def write_manifest(folder: Path, *bodies: str) -> Path:
    path = folder / "manifest.json"
    operations = [
        {"id": sha256(body), "name": f"Op{i}", "type": "query", "body": body}
        for i, body in enumerate(bodies)
    ]
    manifest = {"format": "apollo-persisted-query-manifest", "version": 1}
    path.write_text(json.dumps({**manifest, "operations": operations}))
    return path


def test_safelist_mode_runs_listed_documents_by_hash_or_text_and_nothing_else(
    tmp_path: Path,
) -> None:
    persisted = PersistedQueries(
        cache_size=10, cache_bytes=2**20, safelist=load_safelist(write_manifest(tmp_path, QUERY))
    )
    assert persisted.resolve(None, extension()).text == QUERY
    assert persisted.resolve(QUERY, None).register is False
    assert persisted.resolve(QUERY, extension()).register is False
    other = "{ viewer { handle } }"
    with pytest.raises(PersistedQueryNotInList):
        persisted.resolve(other, None)
    with pytest.raises(PersistedQueryNotInList):
        persisted.resolve(other, extension(sha256(other)))
    with pytest.raises(PersistedQueryNotFound):
        persisted.resolve(None, extension(sha256(other)))


def test_a_manifest_whose_ids_are_not_the_hashes_of_the_bodies_is_refused(
    tmp_path: Path,
) -> None:
    path = write_manifest(tmp_path, QUERY)
    path.write_text(path.read_text().replace(HASH, "0" * 64))
    with pytest.raises(ValueError, match="not the SHA-256 of its body"):
        load_safelist(path)


def entry_bytes(text: str) -> int:
    """What one registration costs: its text, its hash and the LRU's slot (100)."""
    return sys.getsizeof(text) + sys.getsizeof(sha256(text)) + 100


def test_registrations_are_bounded_by_bytes_oldest_first() -> None:
    texts = [f"{{ viewer {{ a{i}: id }} }}" for i in range(4)]
    persisted = PersistedQueries(cache_size=100, cache_bytes=3 * entry_bytes(texts[0]))
    for text in texts:
        persisted.register(sha256(text), text)
    assert len(persisted) == 3
    assert persisted.bytes == 3 * entry_bytes(texts[0])
    assert sha256(texts[0]) not in persisted
    assert all(sha256(text) in persisted for text in texts[1:])


def test_an_emoji_text_costs_four_bytes_a_character() -> None:
    emoji = '{ __type(name: "' + "\U0001f600" * 1000 + '") { name } }'
    persisted = PersistedQueries(cache_size=100, cache_bytes=2**20)
    persisted.register(sha256(emoji), emoji)
    assert persisted.bytes == entry_bytes(emoji) >= 4 * len(emoji)


def test_a_text_larger_than_the_whole_bound_is_not_registered() -> None:
    big = "{ viewer { id } }" + " " * 5000
    persisted = PersistedQueries(cache_size=100, cache_bytes=5000)
    persisted.register(HASH, QUERY)
    persisted.register(sha256(big), big)
    assert (sha256(big) in persisted, HASH in persisted) == (False, True)
    assert persisted.bytes == entry_bytes(QUERY)


def test_registering_a_hash_again_counts_its_bytes_once() -> None:
    persisted = PersistedQueries(cache_size=100, cache_bytes=2**20)
    persisted.register(HASH, QUERY)
    persisted.register(HASH, QUERY)
    assert (len(persisted), persisted.bytes) == (1, entry_bytes(QUERY))
