"""Where each tenant's keys live: wrapped by the master key, in files outside PostgreSQL.

Not in the database, so that a database backup holds no key material, and destroying a
tenant's file makes its rows unreadable everywhere they were copied, backups included
(crypto-shredding). That only holds if this directory is not itself backed up alongside
the master key: back up the master key, not the tenants' key files, or accept that a
destroyed tenant lives on in the key-file backups until they expire.

One JSON file per tenant, `<tenant_uuid>.json`:
`{"tenant_id", "current": <version>, "data_keys": {"<version>": <base64 wrapped>},
"index_key": <base64 wrapped>}`. Every key is wrapped with the tenant id and its role as
context, so a wrapped key copied into another tenant's file, or into another role, does not
unwrap. Files are replaced whole (temp file, fsync, rename) and changed under a lock, so a
crash or two processes rotating at once never lose a key that rows were encrypted with.
"""

import base64
import binascii
import fcntl
import json
import os
import secrets
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from services.runtime.crypto.master_key import MasterKey, UnwrapError

KEY_BYTES = 32


class KeyStoreError(Exception):
    """A tenant's key file that cannot be used as it stands; the message names the file."""


class KeysDestroyed(KeyStoreError):
    """The tenant has no keys: destroyed, or never created. Its encrypted data is gone."""

    def __init__(self, tenant_id: uuid.UUID, directory: Path) -> None:
        super().__init__(
            f"tenant {tenant_id} has no keys in {directory}: they were destroyed "
            "(crypto-shredded) or never created, so its encrypted data cannot be read"
        )
        self.tenant_id = tenant_id


class KeysExist(KeyStoreError):
    """Creating keys again would orphan every row encrypted with the first ones."""

    def __init__(self, tenant_id: uuid.UUID, path: Path) -> None:
        super().__init__(
            f"tenant {tenant_id} already has keys ({path}); rotate them instead of creating"
        )
        self.tenant_id = tenant_id


@dataclass(frozen=True, eq=False)
class TenantKeys:
    """A tenant's unwrapped keys, as fields.py uses them. The repr shows versions only, so
    a logged or failing-assertion TenantKeys gives nothing away."""

    tenant_id: uuid.UUID
    current_version: int
    data_keys: Mapping[int, bytes] = field(repr=False)
    index_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.current_version not in self.data_keys:
            raise ValueError(f"current version {self.current_version} has no data key")
        object.__setattr__(self, "data_keys", MappingProxyType(dict(self.data_keys)))

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self.data_keys))

    def __repr__(self) -> str:
        return (
            f"TenantKeys(tenant_id={self.tenant_id}, current_version={self.current_version}, "
            f"versions={list(self.versions)})"
        )


@dataclass(frozen=True)
class _Wrapped:
    """A key file as stored: every key still wrapped."""

    tenant_id: uuid.UUID
    current: int
    data_keys: dict[int, bytes]
    index_key: bytes


def _data_context(tenant_id: uuid.UUID, version: int) -> bytes:
    return tenant_id.bytes + f"data:{version}".encode()


def _index_context(tenant_id: uuid.UUID) -> bytes:
    return tenant_id.bytes + b"index"


@dataclass(frozen=True)
class TenantKeyStore:
    """Tenants' keys in `directory`, wrapped by `master`. Reads need no lock (files are
    replaced whole); every change takes the directory's lock."""

    directory: Path
    master: MasterKey

    def path(self, tenant_id: uuid.UUID) -> Path:
        return self.directory / f"{tenant_id}.json"

    def create(self, tenant_id: uuid.UUID) -> TenantKeys:
        keys = TenantKeys(
            tenant_id, 1, {1: secrets.token_bytes(KEY_BYTES)}, secrets.token_bytes(KEY_BYTES)
        )
        with self._locked():
            self._write(self._wrap(keys), exclusive=True)
        return keys

    def load(self, tenant_id: uuid.UUID) -> TenantKeys:
        return self._unwrap(self._read(tenant_id))

    def rotate_data_key(self, tenant_id: uuid.UUID) -> TenantKeys:
        """A new current data key; the old ones stay, since rows encrypted with them are
        re-encrypted lazily (fields.key_version), not all at once."""
        with self._locked():
            stored = self._read(tenant_id)
            keys = self._unwrap(stored)
            version = max(keys.data_keys) + 1
            new_key = secrets.token_bytes(KEY_BYTES)
            wrapped = self.master.wrap(new_key, _data_context(tenant_id, version))
            self._write(
                _Wrapped(
                    tenant_id, version, {**stored.data_keys, version: wrapped}, stored.index_key
                ),
                exclusive=False,
            )
        return TenantKeys(tenant_id, version, {**keys.data_keys, version: new_key}, keys.index_key)

    def rewrap(self, tenant_id: uuid.UUID) -> bool:
        """Moves the tenant's keys onto the master's current key (after a master key
        rotation); False when they were there already. The keys themselves do not change,
        so no row needs re-encrypting."""
        with self._locked():
            stored = self._read(tenant_id)
            keys = self._unwrap(stored)  # all of them unwrap, or none is rewrapped
            data_keys = {
                version: self.master.wrap(
                    keys.data_keys[version], _data_context(tenant_id, version)
                )
                if self.master.needs_rewrap(blob)
                else blob
                for version, blob in stored.data_keys.items()
            }
            index_key = (
                self.master.wrap(keys.index_key, _index_context(tenant_id))
                if self.master.needs_rewrap(stored.index_key)
                else stored.index_key
            )
            if data_keys == stored.data_keys and index_key == stored.index_key:
                return False
            self._write(_Wrapped(tenant_id, stored.current, data_keys, index_key), exclusive=False)
        return True

    def tenant_ids(self) -> list[uuid.UUID]:
        try:
            names = [path.name for path in self.directory.iterdir()]
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            stem, dot, suffix = name.partition(".")
            if suffix != "json" or not dot:
                continue
            try:
                tenant_id = uuid.UUID(stem)
            except ValueError:
                continue
            if str(tenant_id) == stem:
                found.append(tenant_id)
        return sorted(found)

    def destroy(self, tenant_id: uuid.UUID) -> bool:
        """Crypto-shreds the tenant: without its keys, its rows (and every backup of them)
        are ciphertext nobody can read. Irreversible by design."""
        with self._locked():
            try:
                self.path(tenant_id).unlink()
            except FileNotFoundError:
                return False
            _fsync_directory(self.directory)
        return True

    def _wrap(self, keys: TenantKeys) -> _Wrapped:
        return _Wrapped(
            keys.tenant_id,
            keys.current_version,
            {
                version: self.master.wrap(key, _data_context(keys.tenant_id, version))
                for version, key in keys.data_keys.items()
            },
            self.master.wrap(keys.index_key, _index_context(keys.tenant_id)),
        )

    def _unwrap(self, stored: _Wrapped) -> TenantKeys:
        tenant_id = stored.tenant_id
        data_keys = {
            version: self._unwrap_one(
                blob, _data_context(tenant_id, version), tenant_id, f"data key {version}"
            )
            for version, blob in stored.data_keys.items()
        }
        index_key = self._unwrap_one(
            stored.index_key, _index_context(tenant_id), tenant_id, "index key"
        )
        return TenantKeys(tenant_id, stored.current, data_keys, index_key)

    def _unwrap_one(self, blob: bytes, context: bytes, tenant_id: uuid.UUID, role: str) -> bytes:
        try:
            key = self.master.unwrap(blob, context)
        except UnwrapError as error:
            raise KeyStoreError(
                f"the {role} of tenant {tenant_id} in {self.path(tenant_id)} cannot be "
                f"unwrapped: {error}"
            ) from None
        if len(key) != KEY_BYTES:
            raise KeyStoreError(
                f"the {role} of tenant {tenant_id} in {self.path(tenant_id)} is "
                f"{len(key)} bytes, not {KEY_BYTES}"
            )
        return key

    def _read(self, tenant_id: uuid.UUID) -> _Wrapped:
        path = self.path(tenant_id)
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise KeysDestroyed(tenant_id, self.directory) from None
        try:
            record = json.loads(text)
            stored = _Wrapped(
                uuid.UUID(record["tenant_id"]),
                int(record["current"]),
                {
                    int(version): base64.b64decode(blob, validate=True)
                    for version, blob in record["data_keys"].items()
                },
                base64.b64decode(record["index_key"], validate=True),
            )
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as error:
            raise KeyStoreError(
                f"{path} is not a tenant key file Nova wrote ({type(error).__name__}: {error})"
            ) from None
        if stored.tenant_id != tenant_id:
            raise KeyStoreError(
                f"{path} holds the keys of tenant {stored.tenant_id}, not of {tenant_id}"
            )
        if stored.current not in stored.data_keys:
            raise KeyStoreError(f"{path} names current version {stored.current}, which it lacks")
        return stored

    def _write(self, stored: _Wrapped, *, exclusive: bool) -> None:
        """Writes the file whole: a crash leaves the old file or the new, never half of one.
        `exclusive` refuses to replace a file that exists (os.link does not overwrite)."""
        path = self.path(stored.tenant_id)
        record = {
            "tenant_id": str(stored.tenant_id),
            "current": stored.current,
            "data_keys": {
                str(version): base64.b64encode(blob).decode()
                for version, blob in sorted(stored.data_keys.items())
            },
            "index_key": base64.b64encode(stored.index_key).decode(),
        }
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with open(descriptor, "wb") as file:
                file.write(json.dumps(record, indent=2).encode() + b"\n")
                file.flush()
                os.fsync(file.fileno())
            if exclusive:
                try:
                    os.link(draft, path)
                except FileExistsError:
                    raise KeysExist(stored.tenant_id, path) from None
            else:
                os.replace(draft, path)
        finally:
            draft.unlink(missing_ok=True)
        _fsync_directory(self.directory)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The directory's lock, so that two processes changing one file do not each write
        their own version of it (a rotation lost that way loses a key rows were encrypted
        with). Creates the directory, owner-only, on first use."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)


def _fsync_directory(directory: Path) -> None:
    """Makes a rename or unlink durable: until the directory is synced, a crash can bring a
    destroyed tenant's file back."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
