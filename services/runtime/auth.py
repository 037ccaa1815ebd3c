"""Signed access tokens and the authenticated caller of the current RPC.

UserService.Authenticate issues an HS256 JWT; every service verifies it (the auth
interceptor puts the result in `current_caller`), so no service has to call another to
know who is asking. The token carries the tenant, which scopes every query.
"""

import os
import secrets
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt

from services.runtime.env import ConfigError
from services.runtime.errors import Unauthenticated
from services.runtime.ids import DEFAULT_TENANT_ID

_ISSUER = "nova"
_ALGORITHM = "HS256"


@dataclass(frozen=True)
class Caller:
    user_id: uuid.UUID
    tenant_id: uuid.UUID
    handle: str


current_caller: ContextVar[Caller | None] = ContextVar("nova_current_caller", default=None)


def caller_or_none() -> Caller | None:
    return current_caller.get()


def require_caller() -> Caller:
    """The signed-in caller, or UNAUTHENTICATED for an anonymous call to a write."""
    caller = current_caller.get()
    if caller is None:
        raise Unauthenticated(
            "this call needs a signed-in user: send metadata 'authorization: Bearer <token>' "
            "with a token from nova.user.v1.UserService/Authenticate"
        )
    return caller


def current_tenant() -> uuid.UUID:
    caller = current_caller.get()
    return caller.tenant_id if caller else DEFAULT_TENANT_ID


@dataclass(frozen=True)
class TokenCodec:
    secret: str
    ttl: timedelta

    def issue(self, caller: Caller) -> tuple[str, datetime]:
        now = datetime.now(UTC)
        expires = now + self.ttl
        claims = {
            "iss": _ISSUER,
            "sub": str(caller.user_id),
            "tid": str(caller.tenant_id),
            "handle": caller.handle,
            "iat": now,
            "exp": expires,
        }
        return jwt.encode(claims, self.secret, algorithm=_ALGORITHM), expires

    def verify(self, token: str) -> Caller:
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[_ALGORITHM],
                issuer=_ISSUER,
                options={"require": ["exp", "sub", "tid", "iss"]},
            )
            return Caller(
                user_id=uuid.UUID(claims["sub"]),
                tenant_id=uuid.UUID(claims["tid"]),
                handle=str(claims.get("handle", "")),
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the access token has expired; call Authenticate again") from None
        except (jwt.InvalidTokenError, ValueError, KeyError):
            raise Unauthenticated(
                "the access token is not valid (malformed, or signed with another key); "
                "call Authenticate for a new one"
            ) from None


MIN_KEY_LENGTH = 32


def development_secret(data_dir: Path) -> str:
    """A signing key kept in the data folder, created on first use, for `nova up`.

    Created whole or not at all: written to a file of its own (mode 0600) and linked into
    place, so processes starting together never read a half-written key, and the first
    one's key is every one's. A key file others may read, or one empty or too short, stops
    the start with what to do, rather than signing with it.
    """
    path = data_dir / "auth-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        _create_key(path)
    return _read_key(path)


def _create_key(path: Path) -> None:
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(descriptor, secrets.token_urlsafe(48).encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    try:
        os.link(draft, path)
    except FileExistsError:
        pass  # another process made it first: its key is the one
    finally:
        draft.unlink()


def _read_key(path: Path) -> str:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(
            f"the signing key {path} can be read by other users (mode {mode:o}); "
            f"run `chmod 600 {path}`"
        )
    key = path.read_text().strip()
    if not key:
        raise ConfigError(f"the signing key {path} is empty; delete it, and a new one is made")
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(
            f"the signing key {path} has {len(key)} characters, fewer than {MIN_KEY_LENGTH}; "
            "delete it, and a new one is made"
        )
    return key
