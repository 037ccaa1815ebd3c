"""The tenant the current call acts in, as the tenant layer sets it, and the rules for it.

A call names its tenant with `x-nova-tenant: SLUG`. With a token, the tenant is the
token's: a header naming another is refused (PERMISSION_DENIED), so a token issued in one
tenant never reads another's rows; one without the header acts in the token's tenant. An
anonymous call without the header acts in the default tenant. A tenant that does not
exist, or was deleted, is NOT_FOUND, its tokens included.
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar

from services.runtime.auth import current_caller
from services.runtime.errors import NotFound, PermissionDenied
from services.runtime.ids import DEFAULT_TENANT_ID
from services.runtime.tenancy.directory import DEFAULT_TENANT, TenantDirectory
from services.runtime.tenancy.registry import Tenant, check_slug

_current: ContextVar[Tenant] = ContextVar("nova_current_tenant", default=DEFAULT_TENANT)


def current_tenant() -> uuid.UUID:
    """The id of the tenant the current call acts in (every query is scoped to it)."""
    return _current.get().id


def current_tenant_record() -> Tenant:
    """The tenant the current call acts in, with its quotas."""
    return _current.get()


class TenantEntry:
    """The tenant layer's `enter`: resolves the call's tenant and makes it current."""

    def __init__(self, directory: TenantDirectory) -> None:
        self.directory = directory

    async def __call__(self, slug: str | None) -> None:
        caller = current_caller.get()
        if slug is None:
            tenant_id = caller.tenant_id if caller is not None else DEFAULT_TENANT_ID
            tenant = await self.directory.by_id(tenant_id)
            if tenant is None:
                raise NotFound(
                    "the tenant of this access token no longer exists; its tokens stopped "
                    "working when it was deleted"
                )
        else:
            found = await self.directory.by_slug(check_slug(slug))
            if found is None:
                raise NotFound(f"there is no tenant {slug!r}; check the x-nova-tenant header")
            tenant = found
            if caller is not None and caller.tenant_id != tenant.id:
                raise PermissionDenied(
                    f"this access token was issued in another tenant, not in {slug!r}; sign "
                    f"in to {slug!r} for a token of its own, or drop the x-nova-tenant header"
                )
        # Set only when it changes: a call's task starts with the server's context, where
        # the default tenant is current.
        if tenant is not _current.get():
            _current.set(tenant)
