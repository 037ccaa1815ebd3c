"""Encrypting a column's values with a tenant's keys, and a blind index to look them up.

Blob: b"\\x01" (format) + 4-byte big-endian data key version + 12-byte random nonce +
AES-256-GCM ciphertext and tag. The version says which key to decrypt with, so keys can be
rotated without re-encrypting every row at once: a row whose `key_version` is not the
tenant's current one is re-encrypted when next written. The header is authenticated with
the caller's `aad`, so neither the version nor the row the value belongs to can be changed.
"""

import hashlib
import hmac
import os
import unicodedata

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.runtime.crypto.key_store import TenantKeys

_FORMAT = b"\x01"
_VERSION_BYTES = 4
_HEADER_BYTES = len(_FORMAT) + _VERSION_BYTES
_NONCE_BYTES = 12
_TAG_BYTES = 16


class Undecryptable(Exception):
    """A blob these keys cannot decrypt. Raised rather than returning anything, since
    AES-GCM either authenticates the plaintext or gives nothing worth having."""


def encrypt(keys: TenantKeys, plaintext: str, aad: bytes) -> bytes:
    """`plaintext` under the tenant's current data key. `aad` should name where the value
    lives (table, column, row id): a blob copied to another row or column then fails to
    decrypt instead of passing as that row's value."""
    version = keys.current_version
    header = _FORMAT + version.to_bytes(_VERSION_BYTES, "big")
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(keys.data_keys[version]).encrypt(nonce, plaintext.encode(), header + aad)
    return header + nonce + sealed


def decrypt(keys: TenantKeys, blob: bytes, aad: bytes) -> str:
    version = key_version(blob)
    key = keys.data_keys.get(version)
    if key is None:
        raise Undecryptable(
            f"the value was encrypted with data key version {version}, which tenant "
            f"{keys.tenant_id}'s keys (versions {list(keys.versions)}) do not hold: its keys "
            "were rotated since they were loaded (load them again), or it is another "
            "tenant's value"
        )
    header = blob[:_HEADER_BYTES]
    nonce = blob[_HEADER_BYTES : _HEADER_BYTES + _NONCE_BYTES]
    try:
        plaintext = AESGCM(key).decrypt(nonce, blob[_HEADER_BYTES + _NONCE_BYTES :], header + aad)
    except InvalidTag:
        raise Undecryptable(
            f"the value fails authentication under tenant {keys.tenant_id}'s data key "
            f"version {version}: it is another tenant's, or was encrypted with other aad "
            "(another row or column), or its bytes were altered"
        ) from None
    try:
        return plaintext.decode()
    except UnicodeDecodeError:
        raise Undecryptable("the value decrypts, but not to UTF-8 text") from None


def key_version(blob: bytes) -> int:
    """The data key version `blob` was encrypted with, for lazy re-encryption."""
    if len(blob) < _HEADER_BYTES + _NONCE_BYTES + _TAG_BYTES:
        raise Undecryptable(f"the value is {len(blob)} bytes, too short to be an encrypted one")
    if blob[:1] != _FORMAT:
        raise Undecryptable(f"the value has format {blob[0]}, which Nova does not know")
    return int.from_bytes(blob[1:_HEADER_BYTES], "big")


def blind_index(keys: TenantKeys, value: str) -> bytes:
    """A keyed hash of `value`, stored beside its ciphertext so an equality lookup (sign in
    by email) needs no decryption. Normalised first, so "A@x.org " finds "a@x.org"; keyed
    per tenant, so equal values in two tenants do not reveal each other, and nobody without
    the key can test guesses against it. It does reveal which rows of one tenant are equal."""
    normalised = unicodedata.normalize("NFKC", value).strip().lower()
    return hmac.digest(keys.index_key, normalised.encode(), hashlib.sha256)
