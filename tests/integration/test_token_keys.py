"""Token keys across real servers: a token signed before a key rotation is accepted while
its key is listed as a previous one and refused once it is dropped; a token for another
audience is refused with the reason."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc import aio

from nova.user.v1 import user_pb2, user_pb2_grpc
from services.runtime.auth import Caller, TokenCodec
from services.runtime.spec import Dependencies
from tests.conftest import SignUp, status_of
from tests.integration.test_sign_in_limits import OPEN, user_server

if TYPE_CHECKING:
    from nova.user.v1.user_pb2_grpc import UserServiceAsyncStub

OLD, NEW = "old-key-" + "o" * 40, "new-key-" + "n" * 40
TTL = timedelta(minutes=5)


async def preferences(address: str, token: str) -> tuple[grpc.StatusCode, str]:
    """GetPreferences (which needs a signed-in caller) with `token`: its status."""
    async with aio.insecure_channel(address) as channel:
        users = user_pb2_grpc.UserServiceStub(channel)
        try:
            await users.GetPreferences(
                user_pb2.GetPreferencesRequest(), metadata=(("authorization", f"Bearer {token}"),)
            )
        except aio.AioRpcError as error:
            return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def test_a_token_of_the_previous_key_works_through_a_rotation_until_the_key_is_dropped(
    deps: Dependencies, sign_up: SignUp
) -> None:
    alice = await sign_up()
    async with (
        user_server(deps, OPEN, tokens=TokenCodec(OLD, TTL)) as before,
        aio.insecure_channel(before) as channel,
    ):
        signed_in = await user_pb2_grpc.UserServiceStub(channel).Authenticate(
            user_pb2.AuthenticateRequest(login=alice.user.handle, password=alice.password)
        )
    old_token = signed_in.access_token
    rotating = TokenCodec(NEW, TTL, previous_secrets=(OLD,))
    async with user_server(deps, OPEN, tokens=rotating) as during:
        assert await preferences(during, old_token) == (grpc.StatusCode.OK, "")
    async with user_server(deps, OPEN, tokens=TokenCodec(NEW, TTL)) as after:
        code, details = await preferences(after, old_token)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "signed with a key this service does not accept" in details


async def test_a_token_for_another_audience_is_refused_with_the_reason(
    deps: Dependencies, users: UserServiceAsyncStub, sign_up: SignUp
) -> None:
    alice = await sign_up()
    assert deps.config.auth_secret is not None
    caller: Caller = deps.tokens.verify(alice.token)
    elsewhere, _ = TokenCodec(deps.config.auth_secret, TTL, audience="billing").issue(caller)
    with pytest.raises(aio.AioRpcError) as refused:
        await users.GetPreferences(
            user_pb2.GetPreferencesRequest(), metadata=(("authorization", f"Bearer {elsewhere}"),)
        )
    assert status_of(refused) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "the access token is not valid here: it is not meant for audience 'nova'; "
        "call Authenticate for a new one",
    )
