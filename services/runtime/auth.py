"""Signed access tokens and the authenticated caller of the current RPC.

UserService.Authenticate issues an HS256 JWT; every service verifies it (the auth
interceptor puts the result in `current_caller`), so no service has to call another to
know who is asking. The token carries the tenant, which scopes every query, its audience
(`aud`), and in its header the id of the key that signed it (`kid`), so that keys can be
rotated without signing everyone out.
"""

import hashlib
import os
import secrets
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt

from services.runtime.env import ConfigError
from services.runtime.errors import Unauthenticated

_ISSUER = "nova"
_ALGORITHM = "HS256"
VERIFIED_TOKENS = 10_000
"""Tokens a codec remembers having verified (about 4 MB at most): a token is verified
once per process, not on every call it makes (the signature check and claims parsing
were a tenth of a GetHomeFeed's CPU)."""


@dataclass(frozen=True)
class Caller:
    user_id: uuid.UUID
    tenant_id: uuid.UUID
    handle: str


@dataclass(frozen=True)
class Admin:
    """The holder of an admin token: may manage tenants, and is no user of any."""

    subject: str


current_admin: ContextVar[Admin | None] = ContextVar("nova_current_admin", default=None)


def require_admin() -> Admin:
    admin = current_admin.get()
    if admin is None:
        raise Unauthenticated(
            "this call needs an admin token: send metadata 'authorization: Bearer <token>' "
            "with a token from `nova tenants admin-token`"
        )
    return admin


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


def key_id(key: str) -> str:
    """The `kid` of a key: a short hash of it, so keys need no names of their own. It
    tells nothing the token's signature does not already (both are functions of the key)."""
    return hashlib.sha256(b"nova-token-key:" + key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TokenCodec:
    """Issues tokens signed with `secret`, and verifies tokens signed with it or with one
    of `previous_secrets` (chosen by the `kid` in the token's header).

    Rotating keys: list the current key in NOVA_AUTH_PREVIOUS_SECRETS everywhere, make the
    new one NOVA_AUTH_SECRET, and drop the old one once its last tokens have expired
    (NOVA_TOKEN_TTL_SECONDS later). Tokens carry `aud` (`audience`), which verification
    requires, so a token issued for another system with the same key is refused.
    """

    secret: str
    ttl: timedelta
    previous_secrets: tuple[str, ...] = ()
    audience: str = "nova"
    _keys: dict[str, str] = field(init=False, repr=False, compare=False)
    _verified: dict[str, tuple[Caller, float]] = field(init=False, repr=False, compare=False)
    """Token -> its caller and expiry (Unix seconds), oldest first; only tokens that
    passed verification, so a flood of forged ones costs no memory."""

    def __post_init__(self) -> None:
        keys = {key_id(key): key for key in (*reversed(self.previous_secrets), self.secret)}
        object.__setattr__(self, "_keys", keys)
        object.__setattr__(self, "_verified", {})

    @property
    def key_id(self) -> str:
        """The `kid` of the tokens this codec issues."""
        return key_id(self.secret)

    def issue(self, caller: Caller) -> tuple[str, datetime]:
        now = datetime.now(UTC)
        expires = now + self.ttl
        claims = {
            "iss": _ISSUER,
            "aud": self.audience,
            "sub": str(caller.user_id),
            "tid": str(caller.tenant_id),
            "handle": caller.handle,
            "iat": now,
            "exp": expires,
        }
        token = jwt.encode(claims, self.secret, algorithm=_ALGORITHM, headers={"kid": self.key_id})
        return token, expires

    def verify(self, token: str) -> Caller:
        """The token's caller: from a token verified before while it has not expired (the
        exact same string, so the same signature, key and claims), else checked now."""
        verified = self._verified.get(token)
        if verified is not None:
            caller, expires = verified
            if time.time() < expires:
                return caller
            del self._verified[token]  # checked again below, for the expiry's own message
        caller, expires = self._check(token)
        if len(self._verified) >= VERIFIED_TOKENS:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (caller, expires)
        return caller

    @property
    def admin_audience(self) -> str:
        """The audience of admin tokens: a user's token is never an admin's, nor the
        reverse, though one key signs both."""
        return f"{self.audience}:admin"

    def issue_admin(self, name: str, ttl: timedelta) -> tuple[str, datetime]:
        """An admin token for the tenant service (`nova tenants admin-token`), naming who
        holds it (`sub`, shown in the access log)."""
        now = datetime.now(UTC)
        expires = now + ttl
        claims = {
            "iss": _ISSUER,
            "aud": self.admin_audience,
            "sub": f"admin:{name}",
            "iat": now,
            "exp": expires,
        }
        token = jwt.encode(claims, self.secret, algorithm=_ALGORITHM, headers={"kid": self.key_id})
        return token, expires

    def verify_admin(self, token: str) -> Admin:
        claims, _ = self._claims(token, self.admin_audience, ("exp", "sub", "iss", "aud"))
        subject = str(claims["sub"])
        if not subject.startswith("admin:"):
            raise _not_valid()
        return Admin(subject)

    def _check(self, token: str) -> tuple[Caller, float]:
        claims, expires = self._claims(token, self.audience, ("exp", "sub", "tid", "iss", "aud"))
        try:
            caller = Caller(
                user_id=uuid.UUID(claims["sub"]),
                tenant_id=uuid.UUID(claims["tid"]),
                handle=str(claims.get("handle", "")),
            )
        # AttributeError: uuid.UUID's, for a `tid` that is no string (a number, a list).
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _not_valid() from None
        return caller, expires

    def _claims(
        self, token: str, audience: str, required: tuple[str, ...]
    ) -> tuple[dict[str, Any], float]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise Unauthenticated(
                    "the access token is not valid: it was signed with a key this service "
                    "does not accept (retired, or another system's); call Authenticate for "
                    "a new one"
                    if kid
                    else "the access token is not valid (it names no signing key); call "
                    "Authenticate for a new one"
                )
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[_ALGORITHM],
                issuer=_ISSUER,
                audience=audience,
                options={"require": list(required)},
            )
            return claims, float(claims["exp"])
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the access token has expired; call Authenticate again") from None
        except (jwt.MissingRequiredClaimError, jwt.InvalidAudienceError) as error:
            if isinstance(error, jwt.MissingRequiredClaimError) and error.claim != "aud":
                raise _not_valid() from None
            raise Unauthenticated(
                f"the access token is not valid here: it is not meant for audience "
                f"{audience!r}; "
                + (
                    "this service takes an admin token (`nova tenants admin-token`)"
                    if audience == self.admin_audience
                    else "call Authenticate for a new one"
                )
            ) from None
        except (jwt.InvalidTokenError, ValueError, KeyError, TypeError):
            raise _not_valid() from None


def _not_valid() -> Unauthenticated:
    return Unauthenticated(
        "the access token is not valid (malformed, or signed with another key); "
        "call Authenticate for a new one"
    )


MIN_KEY_LENGTH = 32

MAX_PREVIOUS_SECRETS = 10
"""Verification keys besides the signing key: a rotation needs one or two."""


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
