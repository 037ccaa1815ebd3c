"""The master key, which wraps (encrypts) every tenant's keys and never leaves the process.

Shaped like a KMS key (wrap, unwrap, a key id) so a real KMS can replace LocalMasterKey
without touching the key store. Wrapped blobs name the master key that wrapped them, so a
master key can be rotated: the new key wraps, the old ones (NOVA_PREVIOUS_MASTER_KEYS) still
unwrap until `TenantKeyStore.rewrap` has moved every tenant onto the new one.
"""

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.runtime.env import ConfigError

KEY_BYTES = 32
MAX_PREVIOUS_KEYS = 10
"""Unwrap-only master keys: a rotation needs one, an interrupted one two."""
MAKE_ONE = "python -c 'import base64,os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'"

_FORMAT = b"\x01"
_ID_BYTES = 8
_NONCE_BYTES = 12
_HEADER_BYTES = len(_FORMAT) + _ID_BYTES
_TAG_BYTES = 16


class UnwrapError(Exception):
    """A wrapped key that cannot be unwrapped: its master key is not held, or it was wrapped
    for another context, or it was altered. Never a guess at the key."""


class MasterKey(Protocol):
    """What the key store needs from a master key; a KMS client can provide the same."""

    @property
    def key_id(self) -> str:
        """The id of the key that `wrap` uses now."""
        ...

    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        """`plaintext` encrypted, bound to `context`: unwrapping needs the same context."""
        ...

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        """What `wrap` was given; UnwrapError when that cannot be recovered."""
        ...

    def needs_rewrap(self, blob: bytes) -> bool:
        """Whether `blob` was wrapped by a key other than the current one, so a rotation
        can tell what is left to do without unwrapping everything."""
        ...


def master_key_id(key: bytes) -> str:
    """A short, non-secret name for a key (a hash of it), so keys need no names of their own."""
    return _raw_id(key).hex()


def _raw_id(key: bytes) -> bytes:
    return hashlib.sha256(b"nova-master-key:" + key).digest()[:_ID_BYTES]


@dataclass(frozen=True)
class LocalMasterKey:
    """A master key held in memory: AES-256-GCM, wrapping with `current`, unwrapping with it
    or any of `previous`.

    Blob: b"\\x01" + the wrapping key's 8-byte id + 12-byte random nonce + ciphertext and
    tag; the header is authenticated along with `context`, so neither can be changed.
    """

    current: bytes = field(repr=False)
    previous: tuple[bytes, ...] = field(default=(), repr=False)
    _ciphers: dict[bytes, AESGCM] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ciphers = {}
        for key in (*reversed(self.previous), self.current):
            if len(key) != KEY_BYTES:
                raise ValueError(f"a master key must be {KEY_BYTES} bytes, got {len(key)}")
            ciphers[_raw_id(key)] = AESGCM(key)
        object.__setattr__(self, "_ciphers", ciphers)

    def __repr__(self) -> str:
        previous = ", ".join(master_key_id(key) for key in self.previous)
        return f"LocalMasterKey(key_id={self.key_id!r}, previous=[{previous}])"

    @property
    def key_id(self) -> str:
        return master_key_id(self.current)

    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        header = _FORMAT + _raw_id(self.current)
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[header[1:]].encrypt(nonce, plaintext, header + context)
        return header + nonce + sealed

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        wrapped_by = _wrapped_by(blob)
        cipher = self._ciphers.get(wrapped_by)
        if cipher is None:
            raise UnwrapError(
                f"it was wrapped by master key {wrapped_by.hex()}, which is neither the "
                f"current one ({self.key_id}) nor one of the previous ones; list that key "
                "in NOVA_PREVIOUS_MASTER_KEYS"
            )
        header, nonce = blob[:_HEADER_BYTES], blob[_HEADER_BYTES : _HEADER_BYTES + _NONCE_BYTES]
        try:
            return cipher.decrypt(nonce, blob[_HEADER_BYTES + _NONCE_BYTES :], header + context)
        except InvalidTag:
            raise UnwrapError(
                f"it fails authentication under master key {wrapped_by.hex()}: it was "
                "wrapped for another tenant or purpose, or it has been altered"
            ) from None

    def needs_rewrap(self, blob: bytes) -> bool:
        return _wrapped_by(blob) != _raw_id(self.current)


def _wrapped_by(blob: bytes) -> bytes:
    if len(blob) < _HEADER_BYTES + _NONCE_BYTES + _TAG_BYTES or blob[:1] != _FORMAT:
        raise UnwrapError("it is not a key wrapped by a Nova master key (unknown format)")
    return blob[1:_HEADER_BYTES]


def load_master_key(env: Mapping[str, str], data_dir: Path, *, development: bool) -> LocalMasterKey:
    """The master key from NOVA_MASTER_KEY or NOVA_MASTER_KEY_FILE, with the unwrap-only
    NOVA_PREVIOUS_MASTER_KEYS; in development, when neither is set, a key kept in the data
    folder. Production never makes one up: a key lost with its container would take every
    tenant's data with it.
    """
    inline = env.get("NOVA_MASTER_KEY", "").strip()
    file = env.get("NOVA_MASTER_KEY_FILE", "").strip()
    if inline and file:
        raise ConfigError(
            "NOVA_MASTER_KEY and NOVA_MASTER_KEY_FILE are both set; set only one of them"
        )
    if inline:
        current = _decode(inline, "NOVA_MASTER_KEY")
    elif file:
        current = _read_key_file(Path(file), "NOVA_MASTER_KEY_FILE")
    elif development:
        current = _development_key(data_dir)
    else:
        raise ConfigError(
            "no master key: set NOVA_MASTER_KEY to url-safe base64 of 32 random bytes (or "
            "NOVA_MASTER_KEY_FILE to a file of mode 0600 holding it); make one with "
            f"{MAKE_ONE} and keep it safe, since tenants' data cannot be read without it"
        )
    return LocalMasterKey(current, _previous_keys(env.get("NOVA_PREVIOUS_MASTER_KEYS", "")))


def _previous_keys(raw: str) -> tuple[bytes, ...]:
    entries = [entry.strip() for entry in raw.split(",") if entry.strip()]
    if len(entries) > MAX_PREVIOUS_KEYS:
        raise ConfigError(
            f"NOVA_PREVIOUS_MASTER_KEYS lists {len(entries)} keys, more than "
            f"{MAX_PREVIOUS_KEYS}; drop the ones `nova` no longer needs (after a rewrap)"
        )
    return tuple(
        _decode(entry, f"NOVA_PREVIOUS_MASTER_KEYS entry {number}")
        for number, entry in enumerate(entries, start=1)
    )


def _decode(text: str, source: str) -> bytes:
    """The key in `text`; errors say what is wrong with it, never what it is."""
    padded = text + "=" * (-len(text) % 4)
    try:
        key = base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{source} is not url-safe base64; make a key with {MAKE_ONE}") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"{source} holds {len(key)} bytes, a master key is {KEY_BYTES}; make one with "
            f"{MAKE_ONE}"
        )
    return key


def _read_key_file(path: Path, source: str) -> bytes:
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        raise ConfigError(f"{source}: the master key file {path} does not exist") from None
    if mode & 0o077:
        raise ConfigError(
            f"{source}: the master key file {path} can be read by other users (mode "
            f"{mode:o}); run `chmod 600 {path}`"
        )
    text = path.read_text().strip()
    if not text:
        raise ConfigError(f"{source}: the master key file {path} is empty")
    return _decode(text, f"{source} ({path})")


def _development_key(data_dir: Path) -> bytes:
    """Created whole or not at all, like auth.development_secret's key: written to a file of
    its own (mode 0600) and linked into place, so processes starting together agree on the
    first one's key and none reads a half-written one."""
    path = data_dir / "master-key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        _create_key(path)
    return _read_key_file(path, "the development master key")


def _create_key(path: Path) -> None:
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(descriptor, base64.urlsafe_b64encode(os.urandom(KEY_BYTES)) + b"\n")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    try:
        os.link(draft, path)
    except FileExistsError:
        pass  # another process made it first: its key is the one
    finally:
        draft.unlink()
