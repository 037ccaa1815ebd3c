"""The tenant service's SPEC: the registry's admin API (its schema is the runtime's)."""

from grpc import aio

from nova.tenant.v1 import tenant_pb2, tenant_pb2_grpc
from services.runtime.spec import Closer, Dependencies, ServiceSpec
from services.runtime.tenancy.registry import MIGRATIONS, SCHEMA
from services.runtime.validation import validated
from services.tenant.servicer import TenantServicer

_SERVICE = tenant_pb2.DESCRIPTOR.services_by_name["TenantService"]


def _add_to_server(server: aio.Server, deps: Dependencies) -> Closer | None:
    servicer = TenantServicer(deps.db, deps.tenants)
    tenant_pb2_grpc.add_TenantServiceServicer_to_server(validated(servicer, _SERVICE), server)
    return None


SPEC = ServiceSpec(
    name="tenant",
    service=_SERVICE,
    stub=tenant_pb2_grpc.TenantServiceStub,
    default_port=50055,
    # Every server reads the registry, so the runtime owns its schema and migrates it
    # first; declared here too, it is migrated once.
    schema=SCHEMA,
    migrations=MIGRATIONS,
    add_to_server=_add_to_server,
    admin=True,
)
