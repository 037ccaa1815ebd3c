"""Tenants on real servers: the admin API, naming a tenant per call (gRPC metadata and the
gateway's header), per-tenant handles, and tokens that stay in their tenant."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest
from grpc import aio

from gateway.app import build_app
from gateway.clients import Target, open_clients
from gateway.settings import GatewaySettings
from nova.tenant.v1 import tenant_pb2, tenant_pb2_grpc
from nova.user.v1 import user_pb2
from services.runtime.spec import Dependencies
from tests.conftest import status_of

if TYPE_CHECKING:
    from nova.tenant.v1.tenant_pb2_grpc import TenantServiceAsyncStub
    from nova.user.v1.user_pb2_grpc import UserServiceAsyncStub

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def tenants(channels: dict[str, aio.Channel]) -> TenantServiceAsyncStub:
    return tenant_pb2_grpc.TenantServiceStub(channels["tenant"])


@pytest.fixture(scope="module")
def admin(deps: Dependencies) -> tuple[tuple[str, str], ...]:
    token, _ = deps.tokens.issue_admin("tests", timedelta(minutes=10))
    return (("authorization", f"Bearer {token}"),)


def in_(slug: str, token: str | None = None) -> tuple[tuple[str, str], ...]:
    metadata = (("x-nova-tenant", slug),)
    return metadata + ((("authorization", f"Bearer {token}"),) if token else ())


async def _create(
    tenants: TenantServiceAsyncStub, admin: tuple[tuple[str, str], ...], name: str = ""
) -> tenant_pb2.Tenant:
    slug = f"t-{uuid.uuid4().hex[:10]}"
    created = await tenants.CreateTenant(
        tenant_pb2.CreateTenantRequest(slug=slug, name=name), metadata=admin
    )
    return created.tenant


async def _sign_up(
    users: UserServiceAsyncStub, slug: str, handle: str
) -> tuple[user_pb2.User, str]:
    created = await users.CreateUser(
        user_pb2.CreateUserRequest(handle=handle, email=f"{handle}@example.com", password=PASSWORD),
        metadata=in_(slug),
    )
    auth = await users.Authenticate(
        user_pb2.AuthenticateRequest(login=handle, password=PASSWORD), metadata=in_(slug)
    )
    return created.user, auth.access_token


async def test_an_admin_creates_lists_limits_and_deletes_tenants(
    tenants: TenantServiceAsyncStub, admin: tuple[tuple[str, str], ...]
) -> None:
    tenant = await _create(tenants, admin, name="Acme Corp")
    assert tenant.name == "Acme Corp"
    assert uuid.UUID(tenant.id).version == 7
    listed = await tenants.ListTenants(tenant_pb2.ListTenantsRequest(), metadata=admin)
    slugs = [t.slug for t in listed.tenants]
    assert slugs[0] == "default"
    assert tenant.slug in slugs

    limited = await tenants.SetQuotas(
        tenant_pb2.SetQuotasRequest(
            slug=tenant.slug, quotas=tenant_pb2.Quotas(requests_per_second=50, max_posts=10)
        ),
        metadata=admin,
    )
    assert limited.tenant.quotas.requests_per_second == 50
    assert limited.tenant.quotas.max_posts == 10
    assert not limited.tenant.quotas.HasField("max_users")
    lifted = await tenants.SetQuotas(
        tenant_pb2.SetQuotasRequest(slug=tenant.slug, lift=["max_posts"]), metadata=admin
    )
    assert not lifted.tenant.quotas.HasField("max_posts")
    assert lifted.tenant.quotas.requests_per_second == 50, "quotas not named keep their value"

    await tenants.DeleteTenant(tenant_pb2.DeleteTenantRequest(slug=tenant.slug), metadata=admin)
    with pytest.raises(aio.AioRpcError) as gone:
        await tenants.GetTenant(tenant_pb2.GetTenantRequest(slug=tenant.slug), metadata=admin)
    assert status_of(gone)[0] == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (tenant_pb2.CreateTenantRequest(slug=""), grpc.StatusCode.INVALID_ARGUMENT, "required"),
        (
            tenant_pb2.CreateTenantRequest(slug="Not A Slug"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "lowercase letters",
        ),
        (
            tenant_pb2.CreateTenantRequest(slug="x" * 41),
            grpc.StatusCode.INVALID_ARGUMENT,
            "1 to 40",
        ),
        (
            tenant_pb2.CreateTenantRequest(slug="default"),
            grpc.StatusCode.ALREADY_EXISTS,
            "exists already",
        ),
        (
            tenant_pb2.CreateTenantRequest(slug="ok-name", name="n" * 201),
            grpc.StatusCode.INVALID_ARGUMENT,
            "at most 200",
        ),
        (
            tenant_pb2.SetQuotasRequest(slug="default"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "at least one quota",
        ),
        (
            tenant_pb2.SetQuotasRequest(slug="default", lift=["max_likes"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "no quota",
        ),
        (
            tenant_pb2.SetQuotasRequest(
                slug="default", quotas=tenant_pb2.Quotas(requests_per_second=-1)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "above 0",
        ),
        (
            tenant_pb2.SetQuotasRequest(slug="default", quotas=tenant_pb2.Quotas(max_in_flight=0)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "at least 1",
        ),
        (
            tenant_pb2.SetQuotasRequest(slug="nope-none", quotas=tenant_pb2.Quotas(burst=1)),
            grpc.StatusCode.NOT_FOUND,
            "no tenant 'nope-none'",
        ),
        (
            tenant_pb2.DeleteTenantRequest(slug="default"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "cannot be deleted",
        ),
    ],
)
async def test_bad_admin_requests_get_a_clear_error(
    tenants: TenantServiceAsyncStub,
    admin: tuple[tuple[str, str], ...],
    request_: object,
    code: grpc.StatusCode,
    message: str,
) -> None:
    method = {
        tenant_pb2.CreateTenantRequest: tenants.CreateTenant,
        tenant_pb2.SetQuotasRequest: tenants.SetQuotas,
        tenant_pb2.DeleteTenantRequest: tenants.DeleteTenant,
    }[type(request_)]
    with pytest.raises(aio.AioRpcError) as refused:
        await method(request_, metadata=admin)  # type: ignore[operator]
    assert status_of(refused)[0] == code
    assert message in status_of(refused)[1]


async def test_only_admin_tokens_manage_tenants(
    tenants: TenantServiceAsyncStub, users: UserServiceAsyncStub, deps: Dependencies
) -> None:
    _, user_token = await _sign_up(users, "default", f"adm_{uuid.uuid4().hex[:8]}")
    request = tenant_pb2.ListTenantsRequest()
    with pytest.raises(aio.AioRpcError) as anonymous:
        await tenants.ListTenants(request)
    assert status_of(anonymous)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert "admin token" in status_of(anonymous)[1]
    with pytest.raises(aio.AioRpcError) as as_user:
        await tenants.ListTenants(request, metadata=(("authorization", f"Bearer {user_token}"),))
    assert status_of(as_user)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert "admin token" in status_of(as_user)[1]
    admin_token, _ = deps.tokens.issue_admin("tests", timedelta(minutes=1))
    with pytest.raises(aio.AioRpcError) as admin_as_user:
        await users.UpdateProfile(
            user_pb2.UpdateProfileRequest(display_name="x"),
            metadata=(("authorization", f"Bearer {admin_token}"),),
        )
    assert status_of(admin_as_user)[0] == grpc.StatusCode.UNAUTHENTICATED


async def test_the_same_handle_lives_in_two_tenants_and_tokens_stay_in_theirs(
    tenants: TenantServiceAsyncStub,
    admin: tuple[tuple[str, str], ...],
    users: UserServiceAsyncStub,
) -> None:
    acme, globex = await _create(tenants, admin), await _create(tenants, admin)
    handle = f"dup_{uuid.uuid4().hex[:8]}"
    in_acme, acme_token = await _sign_up(users, acme.slug, handle)
    in_globex, globex_token = await _sign_up(users, globex.slug, handle)
    assert in_acme.id != in_globex.id

    # Each tenant sees its own user by that handle, and the default tenant none.
    for slug, user in ((acme.slug, in_acme), (globex.slug, in_globex)):
        found = await users.GetUser(user_pb2.GetUserRequest(handle=handle), metadata=in_(slug))
        assert found.user.id == user.id
    with pytest.raises(aio.AioRpcError) as nowhere:
        await users.GetUser(user_pb2.GetUserRequest(handle=handle))
    assert status_of(nowhere)[0] == grpc.StatusCode.NOT_FOUND
    with pytest.raises(aio.AioRpcError) as across:
        await users.GetUser(user_pb2.GetUserRequest(id=in_globex.id), metadata=in_(acme.slug))
    assert status_of(across)[0] == grpc.StatusCode.NOT_FOUND

    # A token acts in its tenant without the header, and is refused with another's.
    profile = user_pb2.UpdateProfileRequest(display_name="Acme's")
    bearer = (("authorization", f"Bearer {acme_token}"),)
    assert (await users.UpdateProfile(profile, metadata=bearer)).user.id == in_acme.id
    with pytest.raises(aio.AioRpcError) as crossed:
        await users.UpdateProfile(profile, metadata=in_(globex.slug, acme_token))
    code, message = status_of(crossed)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "another tenant" in message
    assert globex.slug in message
    # Nor does a log-in in one tenant work with the other's password store.
    with pytest.raises(aio.AioRpcError) as wrong_place:
        await users.Authenticate(
            user_pb2.AuthenticateRequest(login=f"{handle}@example.com", password="wrong one!"),
            metadata=in_(globex.slug),
        )
    assert status_of(wrong_place)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert globex_token


async def test_unknown_deleted_and_malformed_tenants_are_refused(
    tenants: TenantServiceAsyncStub,
    admin: tuple[tuple[str, str], ...],
    users: UserServiceAsyncStub,
) -> None:
    request = user_pb2.GetUserRequest(handle="anyone")
    with pytest.raises(aio.AioRpcError) as unknown:
        await users.GetUser(request, metadata=in_("no-such-tenant"))
    assert status_of(unknown) == (
        grpc.StatusCode.NOT_FOUND,
        "there is no tenant 'no-such-tenant'; check the x-nova-tenant header",
    )
    with pytest.raises(aio.AioRpcError) as malformed:
        await users.GetUser(request, metadata=in_("Bad Slug"))
    assert status_of(malformed)[0] == grpc.StatusCode.INVALID_ARGUMENT

    doomed = await _create(tenants, admin)
    _, token = await _sign_up(users, doomed.slug, f"doomed_{uuid.uuid4().hex[:8]}")
    await tenants.DeleteTenant(tenant_pb2.DeleteTenantRequest(slug=doomed.slug), metadata=admin)
    with pytest.raises(aio.AioRpcError) as by_header:
        await users.GetUser(request, metadata=in_(doomed.slug))
    assert status_of(by_header)[0] == grpc.StatusCode.NOT_FOUND
    with pytest.raises(aio.AioRpcError) as by_token:
        await users.UpdateProfile(
            user_pb2.UpdateProfileRequest(display_name="x"),
            metadata=(("authorization", f"Bearer {token}"),),
        )
    assert status_of(by_token)[0] == grpc.StatusCode.NOT_FOUND
    assert "deleted" in status_of(by_token)[1]


@pytest.fixture(scope="module")
async def http(targets: dict[str, Target]) -> AsyncIterator[httpx.AsyncClient]:
    async with open_clients(targets) as clients:
        app = build_app(GatewaySettings(), clients)
        transport = httpx.ASGITransport(app=app.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


SIGN_UP = """mutation($input: SignUpInput!) { signUp(input: $input) { token user { id } } }"""
BY_HANDLE = "query($h: String!) { user(handle: $h) { id } }"


async def test_the_gateway_passes_the_tenant_header_on(
    http: httpx.AsyncClient, tenants: TenantServiceAsyncStub, admin: tuple[tuple[str, str], ...]
) -> None:
    tenant = await _create(tenants, admin)
    handle = f"gw_{uuid.uuid4().hex[:8]}"
    variables = {"input": {"handle": handle, "email": f"{handle}@x.org", "password": PASSWORD}}
    signed = await http.post(
        "/graphql",
        json={"query": SIGN_UP, "variables": variables},
        headers={"x-nova-tenant": tenant.slug},
    )
    user_id = signed.json()["data"]["signUp"]["user"]["id"]
    token = signed.json()["data"]["signUp"]["token"]
    query = {"query": BY_HANDLE, "variables": {"h": handle}}
    found = await http.post("/graphql", json=query, headers={"x-nova-tenant": tenant.slug})
    assert found.json()["data"]["user"]["id"] == user_id
    elsewhere = await http.post("/graphql", json=query)
    assert elsewhere.json()["data"]["user"] is None, "not in the default tenant"

    crossed = await http.post(
        "/graphql",
        json=query,
        headers={"x-nova-tenant": "default", "authorization": f"Bearer {token}"},
    )
    assert crossed.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    unknown = await http.post("/graphql", json=query, headers={"x-nova-tenant": "nobody-here"})
    assert unknown.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    malformed = await http.post("/graphql", json=query, headers={"x-nova-tenant": "Bad Slug!"})
    assert malformed.status_code == 400
    assert malformed.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
