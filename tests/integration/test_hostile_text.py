"""Text no field may hold is refused as the caller's mistake, naming the field, by every
service: a NUL character (which PostgreSQL cannot store, and which used to reach it and
come back INTERNAL), an oversized value, an oversized language tag."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from grpc import aio

from nova.content.v1 import content_pb2, content_pb2_grpc
from nova.user.v1 import user_pb2
from tests.conftest import SignUp

if TYPE_CHECKING:
    from nova.content.v1.content_pb2_grpc import ContentServiceAsyncStub
    from nova.user.v1.user_pb2_grpc import UserServiceAsyncStub

NUL = "a\x00b"


@pytest.fixture(scope="module")
def content(channels: dict[str, aio.Channel]) -> ContentServiceAsyncStub:
    return content_pb2_grpc.ContentServiceStub(channels["content"])


async def _refused(call: Awaitable[Any]) -> str:
    with pytest.raises(aio.AioRpcError) as error:
        await call
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    return error.value.details() or ""


@pytest.mark.parametrize(
    ("field", "request_with"),
    [
        ("handle", lambda text: user_pb2.CreateUserRequest(handle=text, email="e@x.io")),
        ("email", lambda text: user_pb2.CreateUserRequest(handle="nul_email", email=text)),
        (
            "password",
            lambda text: user_pb2.CreateUserRequest(
                handle="nul_password", email="p@x.io", password=text * 4
            ),
        ),
        (
            "display_name",
            lambda text: user_pb2.CreateUserRequest(
                handle="nul_name", email="n@x.io", password="long enough", display_name=text
            ),
        ),
    ],
)
async def test_sign_up_refuses_a_nul_in_any_field(
    users: UserServiceAsyncStub, field: str, request_with: Callable[[str], Any]
) -> None:
    details = await _refused(users.CreateUser(request_with(NUL)))
    assert details.startswith(f"{field} contains a NUL character")


async def test_log_in_and_lookups_refuse_a_nul(users: UserServiceAsyncStub) -> None:
    login = await _refused(users.Authenticate(user_pb2.AuthenticateRequest(login=NUL)))
    assert login.startswith("login contains a NUL")
    lookup = await _refused(users.GetUser(user_pb2.GetUserRequest(handle=NUL)))
    assert lookup.startswith("handle contains a NUL")
    batch = await _refused(users.BatchGetUsers(user_pb2.BatchGetUsersRequest(ids=["x", NUL])))
    assert batch.startswith("ids[1] contains a NUL")


async def test_signed_in_writes_refuse_a_nul_and_oversized_text(
    users: UserServiceAsyncStub, content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    ada = await sign_up("nul")
    bio = user_pb2.UpdateProfileRequest(bio=NUL)
    assert (await _refused(users.UpdateProfile(bio, metadata=ada.metadata))).startswith(
        "bio contains a NUL"
    )
    post = content_pb2.CreatePostRequest(text=NUL)
    assert (await _refused(content.CreatePost(post, metadata=ada.metadata))).startswith(
        "text contains a NUL"
    )
    huge = content_pb2.CreatePostRequest(text="x" * 1_800_000)
    assert "no field takes more than 10000" in await _refused(
        content.CreatePost(huge, metadata=ada.metadata)
    )


async def test_a_language_tag_is_capped(users: UserServiceAsyncStub, sign_up: SignUp) -> None:
    ada = await sign_up("lang")

    def preferences(language: str) -> user_pb2.UpdatePreferencesRequest:
        return user_pb2.UpdatePreferencesRequest(
            preferences=user_pb2.Preferences(language=language),
            update_mask=FieldMask(paths=["language"]),
        )

    long_tag = "en" + "-abcdefgh" * 4  # 38 characters of valid syntax
    details = await _refused(users.UpdatePreferences(preferences(long_tag), metadata=ada.metadata))
    assert "is not a BCP 47 tag" in details
    fine = await users.UpdatePreferences(preferences("pt-BR"), metadata=ada.metadata)
    assert fine.preferences.language == "pt-BR"
