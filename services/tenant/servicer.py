"""gRPC surface of nova.tenant.v1.TenantService: admin only, over the runtime's registry."""

from __future__ import annotations

from typing import Any

from grpc import aio

from nova.tenant.v1 import tenant_pb2, tenant_pb2_grpc
from services.runtime.auth import require_admin
from services.runtime.db import Database
from services.runtime.errors import InvalidArgument
from services.runtime.tenancy import registry
from services.runtime.tenancy.directory import TenantDirectory
from services.runtime.tenancy.registry import QUOTA_NAMES, Tenant
from services.runtime.timestamps import to_timestamp

Context = aio.ServicerContext[Any, Any]


class TenantServicer(tenant_pb2_grpc.TenantServiceServicer):
    def __init__(self, db: Database, directory: TenantDirectory) -> None:
        self._db = db
        self._directory = directory

    async def CreateTenant(
        self, request: tenant_pb2.CreateTenantRequest, context: Context
    ) -> tenant_pb2.CreateTenantResponse:
        require_admin()
        if not request.slug:
            raise InvalidArgument("slug is required")
        async with self._db.transaction() as conn:
            tenant = await registry.create(conn, request.slug, request.name)
        self._directory.forget()
        return tenant_pb2.CreateTenantResponse(tenant=to_proto(tenant))

    async def ListTenants(
        self, request: tenant_pb2.ListTenantsRequest, context: Context
    ) -> tenant_pb2.ListTenantsResponse:
        require_admin()
        async with self._db.connection() as conn:
            tenants = await registry.live(conn)
        return tenant_pb2.ListTenantsResponse(tenants=[to_proto(t) for t in tenants])

    async def GetTenant(
        self, request: tenant_pb2.GetTenantRequest, context: Context
    ) -> tenant_pb2.GetTenantResponse:
        require_admin()
        async with self._db.connection() as conn:
            tenant = await registry.require(conn, _slug(request.slug))
        return tenant_pb2.GetTenantResponse(tenant=to_proto(tenant))

    async def SetQuotas(
        self, request: tenant_pb2.SetQuotasRequest, context: Context
    ) -> tenant_pb2.SetQuotasResponse:
        require_admin()
        changes: dict[str, Any] = {
            name: getattr(request.quotas, name)
            for name in QUOTA_NAMES
            if request.quotas.HasField(name)
        }
        for index, name in enumerate(request.lift):
            if name not in QUOTA_NAMES:
                raise InvalidArgument(
                    f"lift[{index}] is {name[:40]!r}, no quota; quotas are "
                    + ", ".join(QUOTA_NAMES)
                )
            if name in changes:
                raise InvalidArgument(f"quota {name} is both set and lifted; do one")
            changes[name] = None
        if not changes:
            raise InvalidArgument("set at least one quota in `quotas`, or name one in `lift`")
        async with self._db.transaction() as conn:
            tenant = await registry.set_quotas(conn, _slug(request.slug), changes)
        self._directory.forget()
        return tenant_pb2.SetQuotasResponse(tenant=to_proto(tenant))

    async def DeleteTenant(
        self, request: tenant_pb2.DeleteTenantRequest, context: Context
    ) -> tenant_pb2.DeleteTenantResponse:
        require_admin()
        async with self._db.transaction() as conn:
            tenant = await registry.delete(conn, _slug(request.slug))
        self._directory.forget()
        return tenant_pb2.DeleteTenantResponse(tenant=to_proto(tenant))


def _slug(value: str) -> str:
    if not value:
        raise InvalidArgument("slug is required")
    return value


def to_proto(tenant: Tenant) -> tenant_pb2.Tenant:
    quotas = tenant_pb2.Quotas(
        **{
            name: value
            for name in QUOTA_NAMES
            if (value := getattr(tenant.quotas, name)) is not None
        }
    )
    return tenant_pb2.Tenant(
        id=str(tenant.id),
        slug=tenant.slug,
        name=tenant.name,
        created_at=to_timestamp(tenant.created_at),
        quotas=quotas,
    )
