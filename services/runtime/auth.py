"""Signed access tokens and the authenticated caller of the current RPC.

UserService.Authenticate issues an HS256 JWT; every service verifies it (the auth
interceptor puts the result in `current_caller`), so no service has to call another to
know who is asking. The token carries the tenant, which scopes every query.
"""

import secrets
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt

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


def development_secret(data_dir: Path) -> str:
    """A signing key kept in the data folder, created on first use, for `nova up`."""
    path = data_dir / "auth-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48))
    return path.read_text().strip()
