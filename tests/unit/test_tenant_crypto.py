"""Per-tenant encryption at rest: values round-trip only with their own tenant's keys and
aad, keys rotate without losing old rows, the master key rotates without losing tenants,
and a destroyed tenant's data cannot be read by anything left on disk."""

import base64
import json
import os
import stat
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from services.runtime.crypto.fields import (
    Undecryptable,
    blind_index,
    decrypt,
    encrypt,
    key_version,
)
from services.runtime.crypto.key_store import (
    KeysDestroyed,
    KeysExist,
    KeyStoreError,
    TenantKeys,
    TenantKeyStore,
)
from services.runtime.crypto.master_key import LocalMasterKey, load_master_key, master_key_id
from services.runtime.env import ConfigError

TENANT = uuid.UUID("0192d1a4-0000-7000-8000-000000000001")
OTHER = uuid.UUID("0192d1a4-0000-7000-8000-000000000002")
AAD = b"user.email:0192d1a4-0000-7000-8000-0000000000aa"


def _text(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


@pytest.fixture
def master() -> LocalMasterKey:
    return LocalMasterKey(os.urandom(32))


@pytest.fixture
def store(tmp_path: Path, master: LocalMasterKey) -> TenantKeyStore:
    return TenantKeyStore(tmp_path / "keys", master)


def _file(store: TenantKeyStore, tenant_id: uuid.UUID) -> dict[str, object]:
    record: dict[str, object] = json.loads(store.path(tenant_id).read_text())
    return record


def test_a_value_round_trips_and_the_blob_shows_neither_it_nor_the_key(
    store: TenantKeyStore,
) -> None:
    keys = store.create(TENANT)
    blob = encrypt(keys, "ada@example.org", AAD)
    assert decrypt(keys, blob, AAD) == "ada@example.org"
    assert decrypt(store.load(TENANT), blob, AAD) == "ada@example.org"
    assert b"ada@example.org" not in blob
    assert blob[:1] == b"\x01"
    assert key_version(blob) == 1
    assert encrypt(keys, "ada@example.org", AAD) != blob  # a fresh nonce each time


def test_the_key_file_is_owner_only_and_holds_only_wrapped_keys(store: TenantKeyStore) -> None:
    keys = store.create(TENANT)
    assert stat.S_IMODE(store.directory.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(store.path(TENANT).stat().st_mode) == 0o600
    text = store.path(TENANT).read_bytes()
    for key in (keys.data_keys[1], keys.index_key):
        assert key not in text
        assert base64.b64encode(key) not in text
    record = _file(store, TENANT)
    assert record["tenant_id"] == str(TENANT)
    assert record["current"] == 1
    assert sorted(record) == ["current", "data_keys", "index_key", "tenant_id"]
    assert sorted(os.listdir(store.directory)) == [".lock", f"{TENANT}.json"]  # no temp files


def test_creating_keys_twice_is_refused_and_keeps_the_first(store: TenantKeyStore) -> None:
    keys = store.create(TENANT)
    blob = encrypt(keys, "kept", AAD)
    with pytest.raises(KeysExist, match="already has keys"):
        store.create(TENANT)
    assert decrypt(store.load(TENANT), blob, AAD) == "kept"


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda blob: blob, id="wrong aad"),
        pytest.param(lambda blob: blob[:-1] + bytes([blob[-1] ^ 1]), id="flipped tag byte"),
        pytest.param(lambda blob: blob[:20] + bytes([blob[20] ^ 1]) + blob[21:], id="flipped"),
        pytest.param(lambda blob: blob[:1] + (1).to_bytes(4, "big") + blob[5:], id="version"),
        pytest.param(lambda blob: b"\x02" + blob[1:], id="format"),
        pytest.param(lambda blob: blob[:20], id="truncated"),
    ],
)
def test_a_wrong_aad_or_altered_blob_is_undecryptable(
    store: TenantKeyStore, spoil: Callable[[bytes], bytes]
) -> None:
    keys = store.create(TENANT)
    store.rotate_data_key(TENANT)
    keys = store.load(TENANT)
    blob = encrypt(keys, "secret", AAD)
    spoiled = spoil(blob)
    aad = b"user.email:another-row" if spoiled == blob else AAD
    with pytest.raises(Undecryptable):
        decrypt(keys, spoiled, aad)


def test_another_tenants_keys_cannot_decrypt(store: TenantKeyStore) -> None:
    mine, theirs = store.create(TENANT), store.create(OTHER)
    blob = encrypt(mine, "secret", AAD)
    with pytest.raises(Undecryptable, match="fails authentication"):
        decrypt(theirs, blob, AAD)


def test_rotating_the_data_key_keeps_old_values_readable(store: TenantKeyStore) -> None:
    first = store.create(TENANT)
    old = encrypt(first, "old", AAD)
    rotated = store.rotate_data_key(TENANT)
    assert rotated.current_version == 2
    assert rotated.data_keys[2] != rotated.data_keys[1]
    assert rotated.index_key == first.index_key  # blind indexes stay valid
    new = encrypt(rotated, "new", AAD)
    assert (key_version(old), key_version(new)) == (1, 2)
    loaded = store.load(TENANT)
    assert loaded.versions == (1, 2)
    assert loaded.current_version == 2
    assert decrypt(loaded, old, AAD) == "old"
    assert decrypt(loaded, new, AAD) == "new"
    # Keys loaded before the rotation say what to do with a newer value.
    with pytest.raises(Undecryptable, match=r"version 2.*load them again"):
        decrypt(first, new, AAD)
    assert store.rotate_data_key(TENANT).current_version == 3


def test_the_master_key_rotates_without_losing_a_tenant(tmp_path: Path) -> None:
    a, b = os.urandom(32), os.urandom(32)
    directory = tmp_path / "keys"
    keys = TenantKeyStore(directory, LocalMasterKey(a)).create(TENANT)
    blob = encrypt(keys, "survives", AAD)

    both = TenantKeyStore(directory, LocalMasterKey(b, previous=(a,)))
    assert decrypt(both.load(TENANT), blob, AAD) == "survives"
    assert both.rewrap(TENANT) is True
    wrapped = _file(both, TENANT)
    data_keys = wrapped["data_keys"]
    assert isinstance(data_keys, dict)
    for text in [*data_keys.values(), wrapped["index_key"]]:
        assert isinstance(text, str)
        assert not LocalMasterKey(b).needs_rewrap(base64.b64decode(text))
    assert both.rewrap(TENANT) is False

    only_b = TenantKeyStore(directory, LocalMasterKey(b))
    loaded = only_b.load(TENANT)
    assert decrypt(loaded, blob, AAD) == "survives"
    assert loaded.data_keys[1] == keys.data_keys[1]
    assert loaded.index_key == keys.index_key


def test_without_the_old_master_key_a_tenant_does_not_load(tmp_path: Path) -> None:
    a, b = os.urandom(32), os.urandom(32)
    directory = tmp_path / "keys"
    TenantKeyStore(directory, LocalMasterKey(a)).create(TENANT)
    with pytest.raises(KeyStoreError) as raised:
        TenantKeyStore(directory, LocalMasterKey(b)).load(TENANT)
    message = str(raised.value)
    assert master_key_id(a) in message
    assert "NOVA_PREVIOUS_MASTER_KEYS" in message
    assert str(TENANT) in message
    with pytest.raises(KeyStoreError):
        TenantKeyStore(directory, LocalMasterKey(b)).rewrap(TENANT)


def test_destroying_a_tenant_leaves_nothing_that_decrypts_its_data(
    store: TenantKeyStore,
) -> None:
    keys = store.create(TENANT)
    store.create(OTHER)
    blob = encrypt(keys, "forget me", AAD)
    index = blind_index(keys, "forget me")
    assert store.destroy(TENANT) is True

    with pytest.raises(KeysDestroyed) as raised:
        store.load(TENANT)
    assert raised.value.tenant_id == TENANT
    assert "crypto-shredded" in str(raised.value)
    assert not store.path(TENANT).exists()
    assert store.tenant_ids() == [OTHER]
    for name in os.listdir(store.directory):
        assert str(TENANT) not in name
        assert str(TENANT).encode() not in (store.directory / name).read_bytes()
    for survivor in store.tenant_ids():
        with pytest.raises(Undecryptable):
            decrypt(store.load(survivor), blob, AAD)
        assert blind_index(store.load(survivor), "forget me") != index
    assert store.destroy(TENANT) is False
    with pytest.raises(KeysDestroyed):
        store.rotate_data_key(TENANT)


def test_a_wrapped_key_moved_to_another_tenant_or_role_does_not_unwrap(
    store: TenantKeyStore,
) -> None:
    store.create(TENANT)
    store.create(OTHER)
    mine, theirs = _file(store, TENANT), _file(store, OTHER)
    theirs["data_keys"] = mine["data_keys"]
    store.path(OTHER).write_text(json.dumps(theirs))
    with pytest.raises(KeyStoreError, match=r"data key 1 of tenant .* another tenant or purpose"):
        store.load(OTHER)

    data_keys = mine["data_keys"]
    assert isinstance(data_keys, dict)
    mine["index_key"] = data_keys["1"]
    store.path(TENANT).write_text(json.dumps(mine))
    with pytest.raises(KeyStoreError, match="index key of tenant"):
        store.load(TENANT)


def test_a_whole_key_file_copied_to_another_tenant_is_refused(store: TenantKeyStore) -> None:
    store.create(TENANT)
    store.path(OTHER).write_bytes(store.path(TENANT).read_bytes())
    with pytest.raises(KeyStoreError, match=f"holds the keys of tenant {TENANT}, not of {OTHER}"):
        store.load(OTHER)


def test_a_damaged_key_file_is_reported_not_half_read(store: TenantKeyStore) -> None:
    store.create(TENANT)
    store.path(TENANT).write_text('{"tenant_id": "' + str(TENANT) + '"}')
    with pytest.raises(KeyStoreError, match="is not a tenant key file"):
        store.load(TENANT)


def test_tenant_ids_lists_only_key_files(store: TenantKeyStore) -> None:
    assert store.tenant_ids() == []  # no directory yet
    store.create(OTHER)
    store.create(TENANT)
    (store.directory / "notes.json").write_text("{}")
    (store.directory / f".{TENANT}.json.1.ab.tmp").write_text("{}")
    assert store.tenant_ids() == [TENANT, OTHER]


def test_the_blind_index_normalises_and_differs_between_tenants(store: TenantKeyStore) -> None:
    mine, theirs = store.create(TENANT), store.create(OTHER)
    index = blind_index(mine, "A@x.org ")
    assert len(index) == 32
    assert index == blind_index(mine, "a@x.org")
    assert index == blind_index(mine, "\uff21@x.org")  # fullwidth A, folded by NFKC
    assert index != blind_index(mine, "b@x.org")
    assert index != blind_index(theirs, "a@x.org")


def test_tenant_keys_repr_shows_no_key_bytes(store: TenantKeyStore, master: LocalMasterKey) -> None:
    store.create(TENANT)
    keys = store.rotate_data_key(TENANT)
    shown = repr(keys) + str(keys) + repr(store)
    assert f"TenantKeys(tenant_id={TENANT}, current_version=2, versions=[1, 2])" in shown
    assert master.key_id in shown
    for key in (*keys.data_keys.values(), keys.index_key, master.current):
        for form in (repr(key)[2:-1], key.hex(), base64.b64encode(key).decode(), _text(key)):
            assert form not in shown


def test_a_master_key_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="must be 32 bytes, got 16"):
        LocalMasterKey(os.urandom(16))
    with pytest.raises(ValueError, match="must be 32 bytes, got 31"):
        LocalMasterKey(os.urandom(32), previous=(os.urandom(31),))


def test_the_master_key_is_read_from_the_environment(tmp_path: Path) -> None:
    current, previous = os.urandom(32), os.urandom(32)
    env = {
        "NOVA_MASTER_KEY": _text(current).rstrip("="),  # padding is optional
        "NOVA_PREVIOUS_MASTER_KEYS": f" {_text(previous)} ,",
    }
    master = load_master_key(env, tmp_path, development=False)
    assert master.key_id == master_key_id(current)
    assert master.unwrap(LocalMasterKey(previous).wrap(b"k", b"ctx"), b"ctx") == b"k"
    assert master.needs_rewrap(LocalMasterKey(previous).wrap(b"k", b"ctx"))
    assert not master.needs_rewrap(master.wrap(b"k", b"ctx"))
    assert not (tmp_path / "master-key").exists()


def test_the_master_key_file_must_be_owner_only(tmp_path: Path) -> None:
    key = os.urandom(32)
    path = tmp_path / "master.key"
    path.write_text(_text(key) + "\n")
    path.chmod(0o640)
    env = {"NOVA_MASTER_KEY_FILE": str(path)}
    with pytest.raises(ConfigError, match=f"chmod 600 {path}"):
        load_master_key(env, tmp_path, development=True)
    path.chmod(0o600)
    assert load_master_key(env, tmp_path, development=False).key_id == master_key_id(key)


def test_production_without_a_master_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_master_key({}, tmp_path / "data", development=False)
    assert "NOVA_MASTER_KEY" in str(raised.value)
    assert "base64.urlsafe_b64encode(os.urandom(32))" in str(raised.value)
    assert not (tmp_path / "data").exists()


def test_development_makes_one_master_key_and_keeps_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data" / "nested"
    first = load_master_key({}, data_dir, development=True)
    path = data_dir / "master-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_master_key({}, data_dir, development=True)
    assert first.key_id == second.key_id
    assert second.unwrap(first.wrap(b"k", b"ctx"), b"ctx") == b"k"
    assert os.listdir(data_dir) == ["master-key"]  # the draft is gone
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_master_key({}, data_dir, development=True)


def test_both_master_key_variables_at_once_are_refused(tmp_path: Path) -> None:
    env = {"NOVA_MASTER_KEY": _text(os.urandom(32)), "NOVA_MASTER_KEY_FILE": "/k"}
    with pytest.raises(ConfigError, match="set only one"):
        load_master_key(env, tmp_path, development=True)


def test_more_than_ten_previous_master_keys_are_refused(tmp_path: Path) -> None:
    env = {
        "NOVA_MASTER_KEY": _text(os.urandom(32)),
        "NOVA_PREVIOUS_MASTER_KEYS": ",".join(_text(os.urandom(32)) for _ in range(11)),
    }
    with pytest.raises(ConfigError, match="lists 11 keys, more than 10"):
        load_master_key(env, tmp_path, development=False)


@pytest.mark.parametrize(
    ("variable", "secret", "message"),
    [
        ("NOVA_MASTER_KEY", _text(os.urandom(16)), "NOVA_MASTER_KEY holds 16 bytes"),
        ("NOVA_MASTER_KEY", _text(os.urandom(48)), "NOVA_MASTER_KEY holds 48 bytes"),
        ("NOVA_MASTER_KEY", "not*base64" + _text(os.urandom(8)), "is not url-safe base64"),
        ("NOVA_MASTER_KEY", "n\u00e9" + _text(os.urandom(8)), "is not url-safe base64"),
        ("NOVA_PREVIOUS_MASTER_KEYS", _text(os.urandom(31)), "entry 1 holds 31 bytes"),
        ("NOVA_MASTER_KEY_FILE", _text(os.urandom(24)), r"\(.*master-key-file\) holds 24 bytes"),
    ],
)
def test_a_bad_master_key_is_refused_without_showing_it(
    tmp_path: Path, variable: str, secret: str, message: str
) -> None:
    env = {"NOVA_MASTER_KEY": _text(os.urandom(32)), variable: secret}
    if variable == "NOVA_MASTER_KEY_FILE":
        path = tmp_path / "master-key-file"
        path.write_text(secret)
        path.chmod(0o600)
        env = {variable: str(path)}
    with pytest.raises(ConfigError, match=message) as raised:
        load_master_key(env, tmp_path, development=True)
    shown = "".join(traceback.format_exception(raised.value))
    assert secret not in shown
    assert secret[:12] not in shown
    assert "make one with" in str(raised.value) or "make a key with" in str(raised.value)


def test_tenant_keys_hold_their_current_key_and_cannot_be_changed() -> None:
    with pytest.raises(ValueError, match="current version 2 has no data key"):
        TenantKeys(TENANT, 2, {1: os.urandom(32)}, os.urandom(32))
    source = {1: os.urandom(32)}
    keys = TenantKeys(TENANT, 1, source, os.urandom(32))
    source[1] = b"changed afterwards"
    assert keys.data_keys[1] != b"changed afterwards"
    with pytest.raises(TypeError):
        keys.data_keys[2] = os.urandom(32)  # type: ignore[index]
