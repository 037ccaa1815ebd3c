"""Who is asking: the `Authorization: Bearer <token>` header, read but not trusted, and
in which tenant (`X-Nova-Tenant`).

The gateway holds no signing key. It forwards the header with every RPC and each service
verifies the token itself, so a forged token fails at the first call. The gateway only
reads the token's subject to know which user `viewer` and `homeFeed` are about; a
header that is not a bearer JWT at all is rejected before any call is made.
"""

import re
from dataclasses import dataclass

import jwt

from gateway.errors import BadRequest, Unauthenticated

_TENANT_SLUG = re.compile(r"[a-z0-9-]{1,40}")
"""What may be a tenant's slug, checked before it becomes gRPC metadata (which takes
printable ASCII only); the services check the rest, and whether the tenant exists."""


@dataclass(frozen=True)
class Viewer:
    user_id: str
    authorization: str
    """The header exactly as received, forwarded as gRPC `authorization` metadata."""


def viewer_from_header(header: str | None) -> Viewer | None:
    """None for an anonymous request; Unauthenticated for a header that is not a token."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    try:
        claims = jwt.decode(token.strip(), options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise Unauthenticated(
            "the bearer token is not one logIn or signUp issued; log in again"
        ) from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("the bearer token names no user; log in again")
    return Viewer(user_id=subject, authorization=f"Bearer {token.strip()}")


def check_tenant_header(header: str | None) -> None:
    """BadRequest for an X-Nova-Tenant header that cannot be a tenant's slug."""
    if header is not None and not _TENANT_SLUG.fullmatch(header):
        raise BadRequest(
            "the X-Nova-Tenant header must be a tenant's slug (1 to 40 lowercase letters, "
            "digits and hyphens)"
        )
