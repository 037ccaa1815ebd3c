"""Log-in and sign-up against real user services with limits of their own: per login and
per client address (named by a trusted proxy, believed from nobody else), refused with
RESOURCE_EXHAUSTED, when to retry, and the `nova-refusal` mark; a full hashing pool;
and hashes weaker than the profile replaced at log-in."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, cast

import grpc
import pytest
from argon2 import extract_parameters
from grpc import aio

from interceptors.context import (
    CLIENT_ADDRESS_KEY,
    PUSHBACK_KEY,
    REFUSAL_CALLER,
    REFUSAL_KEY,
    REFUSAL_METHOD,
)
from nova.user.v1 import user_pb2, user_pb2_grpc
from services.cli.seed import SeedPlan, seed
from services.registry import REGISTRY
from services.runtime.auth import TokenCodec
from services.runtime.errors import Refused
from services.runtime.process import serve
from services.runtime.rate_limit import Rate
from services.runtime.server import chained_server
from services.runtime.sign_in import SignInSettings
from services.runtime.spec import Dependencies
from services.runtime.validation import validated
from services.user.passwords import Passwords
from services.user.repository import UserRepository
from services.user.servicer import UserServicer
from services.user.sign_in_limits import SignInLimits
from tests.conftest import SignUp, status_of
from tests.unit.test_passwords import GatedHasher, running

if TYPE_CHECKING:
    from nova.user.v1.user_pb2_grpc import UserServiceAsyncStub

UNLIMITED = Rate(per_minute=1_000_000, burst=1_000_000)
OPEN = SignInSettings(
    authenticate_per_login=UNLIMITED,
    authenticate_per_address=UNLIMITED,
    create_user_per_address=UNLIMITED,
)
"""No limit worth the name: each test tightens the one it is about."""


@asynccontextmanager
async def user_server(
    deps: Dependencies,
    sign_in: SignInSettings,
    *,
    profile: str | None = None,
    tokens: TokenCodec | None = None,
) -> AsyncIterator[str]:
    """A user service of its own (same database as the session's), as `nova` builds it,
    with these settings (and hash profile and token keys, if given); yields its address."""
    config = replace(
        deps.config,
        sign_in=sign_in,
        password_hash_profile=profile or deps.config.password_hash_profile,
    )
    own = replace(deps, config=config, tokens=tokens or deps.tokens)
    async with serve(own, [REGISTRY.services["user"]], ports={"user": 0}) as (server,):
        yield f"127.0.0.1:{server.port}"


@asynccontextmanager
async def user_service(
    deps: Dependencies, sign_in: SignInSettings, *, profile: str | None = None
) -> AsyncIterator[UserServiceAsyncStub]:
    """user_server's stub, over a channel from 127.0.0.1 (a trusted proxy by default)."""
    async with (
        user_server(deps, sign_in, profile=profile) as address,
        aio.insecure_channel(address) as channel,
    ):
        yield user_pb2_grpc.UserServiceStub(channel)


def trailing(error: pytest.ExceptionInfo[aio.AioRpcError]) -> dict[str, str]:
    return dict(cast(aio.Metadata, error.value.trailing_metadata()))


def from_address(address: str) -> tuple[tuple[str, str], ...]:
    return ((CLIENT_ADDRESS_KEY, address),)


async def log_in(
    users: UserServiceAsyncStub, login: str, password: str, address: str | None = None
) -> grpc.StatusCode:
    """The status of one Authenticate (OK when it signs in)."""
    try:
        await users.Authenticate(
            user_pb2.AuthenticateRequest(login=login, password=password),
            metadata=from_address(address) if address else None,
        )
    except aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_log_ins_past_a_logins_burst_are_refused_whatever_its_case_with_when_to_retry(
    deps: Dependencies, sign_up: SignUp
) -> None:
    alice, bob = await sign_up(), await sign_up()
    limits = replace(OPEN, authenticate_per_login=Rate(per_minute=1, burst=3))
    async with user_service(deps, limits) as users:
        handle = alice.user.handle
        guesses = [await log_in(users, handle, f"guess {n}") for n in range(3)]
        assert guesses == [grpc.StatusCode.UNAUTHENTICATED] * 3
        for login in (handle, handle.upper(), f"  {handle}  "):
            with pytest.raises(aio.AioRpcError) as refused:
                await users.Authenticate(
                    user_pb2.AuthenticateRequest(login=login, password=alice.password)
                )
            code, details = status_of(refused)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert details.startswith(
                "too many log-in attempts for this login (1/min, bursts of 3); try again in "
            )
            assert details.endswith(" s")
            assert 50 <= int(details.split()[-2]) <= 60
            hint = trailing(refused)
            assert hint[REFUSAL_KEY] == REFUSAL_CALLER
            assert 50_000 <= int(hint[PUSHBACK_KEY]) <= 60_000
        assert await log_in(users, bob.user.handle, bob.password) == grpc.StatusCode.OK


async def test_a_trusted_proxy_names_each_client_and_each_has_its_own_address_limit(
    deps: Dependencies, sign_up: SignUp
) -> None:
    alice = await sign_up()
    limits = replace(OPEN, authenticate_per_address=Rate(per_minute=1, burst=2))
    async with user_service(deps, limits) as users:  # called from 127.0.0.1: trusted
        login = alice.user.handle
        assert (
            await log_in(users, login, "wrong", "198.51.100.7") == grpc.StatusCode.UNAUTHENTICATED
        )
        assert await log_in(users, login, alice.password, "198.51.100.7") == grpc.StatusCode.OK
        with pytest.raises(aio.AioRpcError) as refused:
            await users.Authenticate(
                user_pb2.AuthenticateRequest(login=login, password=alice.password),
                metadata=from_address("198.51.100.7"),
            )
        code, details = status_of(refused)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.startswith("too many log-in attempts from your address (1/min, bursts")
        assert trailing(refused)[REFUSAL_KEY] == REFUSAL_CALLER
        assert await log_in(users, login, alice.password, "198.51.100.8") == grpc.StatusCode.OK
        # The proxy's own calls (seed, a benchmark) have no client address to limit.
        assert [await log_in(users, login, alice.password) for _ in range(3)] == [
            grpc.StatusCode.OK
        ] * 3
        with pytest.raises(aio.AioRpcError) as malformed:
            await users.Authenticate(
                user_pb2.AuthenticateRequest(login=login, password=alice.password),
                metadata=from_address("198.51.100.7, 10.0.0.1"),
            )
        assert status_of(malformed) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "nova-client-address metadata must be one IP address, got '198.51.100.7, 10.0.0.1'",
        )


async def test_an_untrusted_caller_cannot_pick_the_address_it_is_limited_by(
    deps: Dependencies, sign_up: SignUp
) -> None:
    alice = await sign_up()
    limits = replace(OPEN, authenticate_per_address=Rate(per_minute=1, burst=2), trusted_proxies=())
    async with user_service(deps, limits) as users:
        statuses = [
            await log_in(users, alice.user.handle, alice.password, f"198.51.100.{n}")
            for n in range(1, 4)
        ]
    assert statuses == [grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED]


async def test_sign_ups_past_an_addresss_burst_are_refused_before_any_account_is_made(
    deps: Dependencies, users: UserServiceAsyncStub
) -> None:
    limits = replace(OPEN, create_user_per_address=Rate(per_minute=2, burst=2))

    def request(handle: str) -> user_pb2.CreateUserRequest:
        return user_pb2.CreateUserRequest(
            handle=handle, email=f"{handle}@example.com", password="correct horse battery"
        )

    handles = [f"su_{uuid.uuid4().hex[:10]}" for _ in range(4)]
    async with user_service(deps, limits) as limited:
        for handle in handles[:2]:
            await limited.CreateUser(request(handle), metadata=from_address("203.0.113.9"))
        with pytest.raises(aio.AioRpcError) as refused:
            await limited.CreateUser(request(handles[2]), metadata=from_address("203.0.113.9"))
        code, details = status_of(refused)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.startswith("too many accounts created from your address (2/min, bursts")
        assert details.endswith(" s")
        assert 20 <= int(details.split()[-2]) <= 30, "2/min: one every 30 s"
        assert trailing(refused)[REFUSAL_KEY] == REFUSAL_CALLER
        await limited.CreateUser(request(handles[3]), metadata=from_address("203.0.113.10"))
    with pytest.raises(aio.AioRpcError) as missing:
        await users.GetUser(user_pb2.GetUserRequest(handle=handles[2]))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await users.GetUser(user_pb2.GetUserRequest(handle=handles[3]))).user.handle


@asynccontextmanager
async def served_with(deps: Dependencies, passwords: Passwords) -> AsyncIterator[str]:
    """A user service hashing with `passwords` (and no rate limits); yields its address."""
    servicer = UserServicer(UserRepository(deps.db), passwords, deps.tokens, SignInLimits(OPEN))
    server = chained_server(deps.tokens)
    user_pb2_grpc.add_UserServiceServicer_to_server(
        validated(servicer, user_pb2.DESCRIPTOR.services_by_name["UserService"]), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_sign_ins_past_the_hashing_pool_are_refused_as_the_methods_not_the_servers(
    deps: Dependencies,
) -> None:
    hasher = GatedHasher()
    passwords = Passwords(hasher, concurrency=1, queue=0)
    await running(hasher, 1)  # the decoy
    handle = f"hp_{uuid.uuid4().hex[:10]}"
    try:
        async with (
            served_with(deps, passwords) as address,
            aio.insecure_channel(address) as channel,
        ):
            users = user_pb2_grpc.UserServiceStub(channel)
            hasher.gate.clear()
            first = asyncio.ensure_future(
                users.CreateUser(
                    user_pb2.CreateUserRequest(
                        handle=handle, email=f"{handle}@example.com", password="pw-12345678"
                    )
                )
            )
            await running(hasher, 1)
            with pytest.raises(aio.AioRpcError) as refused:
                await users.Authenticate(
                    user_pb2.AuthenticateRequest(login=handle, password="pw-12345678")
                )
            hasher.gate.set()
            assert (await first).user.handle == handle
    finally:
        hasher.gate.set()
    code, details = status_of(refused)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.startswith("too many sign-ins in progress (1 hashing or waiting")
    assert trailing(refused) == {PUSHBACK_KEY: "1000", REFUSAL_KEY: REFUSAL_METHOD}


class CountingPasswords(Passwords):
    """Counts the hashes it refused."""

    refused = 0

    async def hash(self, password: str) -> str:
        try:
            return await super().hash(password)
        except Refused:
            self.refused += 1
            raise


async def test_the_seed_waits_out_a_full_hashing_pool_as_the_refusal_asks(
    deps: Dependencies, addresses: dict[str, str]
) -> None:
    hasher = GatedHasher()
    passwords = CountingPasswords(hasher, concurrency=1, queue=0)
    await running(hasher, 1)  # the decoy
    plan = SeedPlan(
        users=4, posts_per_user=0, follows_per_user=0, comments_per_post=0, likes_per_post=0
    )
    try:
        async with served_with(deps, passwords) as address:
            hasher.gate.clear()
            seeding = asyncio.ensure_future(
                seed({**addresses, "user": address}, plan, concurrency=4)
            )
            await running(hasher, 1)
            for _ in range(2000):  # until the 3 other sign-ups were refused (at once)
                if passwords.refused >= 3:
                    break
                await asyncio.sleep(0.005)
            hasher.gate.set()
            seeded = await seeding
    finally:
        hasher.gate.set()
    assert passwords.refused >= 3
    assert len(seeded.users) == 4
    assert all(user.token for user in seeded.users)


async def stored_hash(deps: Dependencies, user_id: str) -> str:
    async with deps.db.connection() as conn:
        found = await conn.fetchval(
            "SELECT password_hash FROM user_service.users WHERE id = $1", uuid.UUID(user_id)
        )
    assert isinstance(found, str)
    return found


async def test_a_log_in_replaces_a_hash_weaker_than_the_profile_and_never_a_stronger_one(
    deps: Dependencies, sign_up: SignUp, users: UserServiceAsyncStub
) -> None:
    alice = await sign_up()  # the session's services hash with "insecure-fast"
    weak = await stored_hash(deps, alice.user.id)
    assert extract_parameters(weak).memory_cost == 8
    async with user_service(deps, OPEN, profile="rfc9106-low-memory") as strict:
        assert await log_in(strict, alice.user.handle, alice.password) == grpc.StatusCode.OK
        strong = await stored_hash(deps, alice.user.id)
        assert strong != weak
        assert extract_parameters(strong).memory_cost == 65536
        assert await log_in(strict, alice.user.handle, alice.password) == grpc.StatusCode.OK
        assert await stored_hash(deps, alice.user.id) == strong, "rehashed once"
        assert await log_in(strict, alice.user.handle, "wrong") == grpc.StatusCode.UNAUTHENTICATED
    assert await log_in(users, alice.user.handle, alice.password) == grpc.StatusCode.OK
    assert await stored_hash(deps, alice.user.id) == strong, "not weakened again"
