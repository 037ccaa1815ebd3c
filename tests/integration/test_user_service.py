"""UserService on a real server and PostgreSQL: behaviour and every kind of bad input."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from grpc import aio

from nova.common.v1 import page_pb2
from nova.user.v1 import user_pb2
from tests.conftest import SignUp, status_of

if TYPE_CHECKING:
    from nova.user.v1.user_pb2_grpc import UserServiceAsyncStub


async def test_creates_a_user_and_finds_them_by_id_and_by_handle_case_insensitively(
    users: UserServiceAsyncStub, sign_up: SignUp
) -> None:
    alice = await sign_up("Alice", display_name="Alice A.")
    by_id = await users.GetUser(user_pb2.GetUserRequest(id=alice.user.id))
    by_handle = await users.GetUser(user_pb2.GetUserRequest(handle=alice.user.handle.upper()))
    assert by_id.user.id == by_handle.user.id == alice.user.id
    assert by_id.user.display_name == "Alice A."
    assert uuid.UUID(alice.user.id).version == 7


async def test_email_is_shown_only_to_its_owner(
    users: UserServiceAsyncStub, sign_up: SignUp
) -> None:
    alice, bob = await sign_up(), await sign_up()
    request = user_pb2.GetUserRequest(id=alice.user.id)
    assert (await users.GetUser(request)).user.email == ""
    assert (await users.GetUser(request, metadata=bob.metadata)).user.email == ""
    assert (await users.GetUser(request, metadata=alice.metadata)).user.email.endswith(
        "@example.com"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"handle": "", "email": "a@b.co", "password": "longenough"}, "handle is required"),
        ({"handle": "ab", "email": "a@b.co", "password": "longenough"}, "3 to 30"),
        ({"handle": "bad handle!", "email": "a@b.co", "password": "longenough"}, "3 to 30"),
        ({"handle": "x" * 31, "email": "a@b.co", "password": "longenough"}, "3 to 30"),
        ({"handle": "okhandle", "email": "", "password": "longenough"}, "email is required"),
        (
            {"handle": "okhandle", "email": "not-an-email", "password": "longenough"},
            "not an e-mail",
        ),
        ({"handle": "okhandle", "email": "a@b.co", "password": "short"}, "8 to 128"),
        ({"handle": "okhandle", "email": "a@b.co", "password": "p" * 129}, "8 to 128"),
        (
            {
                "handle": "okhandle",
                "email": "a@b.co",
                "password": "longenough",
                "display_name": "d" * 81,
            },
            "at most 80",
        ),
    ],
)
async def test_create_user_rejects_bad_input_with_a_message_naming_the_field(
    users: UserServiceAsyncStub, fields: dict[str, str], message: str
) -> None:
    with pytest.raises(aio.AioRpcError) as error:
        await users.CreateUser(user_pb2.CreateUserRequest(**fields))
    code, details = status_of(error)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in details


async def test_handles_and_emails_are_unique_regardless_of_case(
    users: UserServiceAsyncStub, sign_up: SignUp
) -> None:
    alice = await sign_up()
    with pytest.raises(aio.AioRpcError) as error:
        await users.CreateUser(
            user_pb2.CreateUserRequest(
                handle=alice.user.handle.upper(), email="other@example.com", password="longenough"
            )
        )
    assert status_of(error) == (
        grpc.StatusCode.ALREADY_EXISTS,
        f"the handle {alice.user.handle.upper()!r} is taken; choose another",
    )
    with pytest.raises(aio.AioRpcError) as error:
        await users.CreateUser(
            user_pb2.CreateUserRequest(
                handle="fresh_" + uuid.uuid4().hex[:8],
                email=f"{alice.user.handle.upper()}@EXAMPLE.com",
                password="longenough",
            )
        )
    code, details = status_of(error)
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "already has an account" in details


async def test_get_user_errors(users: UserServiceAsyncStub) -> None:
    cases = [
        (user_pb2.GetUserRequest(), grpc.StatusCode.INVALID_ARGUMENT, "set either id or handle"),
        (user_pb2.GetUserRequest(id="nope"), grpc.StatusCode.INVALID_ARGUMENT, "must be a UUID"),
        (
            user_pb2.GetUserRequest(id=str(uuid.uuid4())),
            grpc.StatusCode.NOT_FOUND,
            "no user with id",
        ),
        (user_pb2.GetUserRequest(handle="nobody_here_x"), grpc.StatusCode.NOT_FOUND, "no user @"),
    ]
    for request, expected_code, message in cases:
        with pytest.raises(aio.AioRpcError) as error:
            await users.GetUser(request)
        code, details = status_of(error)
        assert code == expected_code, request
        assert message in details


async def test_batch_get_users_keeps_request_order_and_reports_missing_ids(
    users: UserServiceAsyncStub, sign_up: SignUp
) -> None:
    a, b, c = await sign_up(), await sign_up(), await sign_up()
    ghost = str(uuid.uuid4())
    response = await users.BatchGetUsers(
        user_pb2.BatchGetUsersRequest(ids=[c.user.id, ghost, a.user.id, b.user.id, a.user.id])
    )
    assert [u.id for u in response.users] == [c.user.id, a.user.id, b.user.id]
    assert list(response.missing_ids) == [ghost]


async def test_batch_get_users_enforces_its_limits(users: UserServiceAsyncStub) -> None:
    too_many = [str(uuid.uuid4()) for _ in range(101)]
    for ids, message in [([], "at least one id"), (too_many, "at most 100"), (["x"], "ids[0]")]:
        with pytest.raises(aio.AioRpcError) as error:
            await users.BatchGetUsers(user_pb2.BatchGetUsersRequest(ids=ids))
        code, details = status_of(error)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message in details


async def test_authenticate_rejects_wrong_passwords_and_unknown_logins_alike(
    users: UserServiceAsyncStub, sign_up: SignUp
) -> None:
    alice = await sign_up()
    by_email = await users.Authenticate(
        user_pb2.AuthenticateRequest(
            login=f"{alice.user.handle}@example.com", password=alice.password
        )
    )
    assert by_email.user.id == alice.user.id
    assert by_email.expires_at.seconds > 0
    for login, password in [(alice.user.handle, "wrong password"), ("nobody_x1", "whatever1")]:
        with pytest.raises(aio.AioRpcError) as error:
            await users.Authenticate(user_pb2.AuthenticateRequest(login=login, password=password))
        assert status_of(error) == (grpc.StatusCode.UNAUTHENTICATED, "wrong login or password")
    with pytest.raises(aio.AioRpcError) as error:
        await users.Authenticate(user_pb2.AuthenticateRequest(login="", password=""))
    assert status_of(error)[0] == grpc.StatusCode.INVALID_ARGUMENT


async def test_writes_need_a_valid_token(users: UserServiceAsyncStub) -> None:
    request = user_pb2.UpdateProfileRequest(bio="hi")
    with pytest.raises(aio.AioRpcError) as error:
        await users.UpdateProfile(request)
    code, details = status_of(error)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in details
    for header in ["Bearer not-a-token", "Basic abc", "Bearer "]:
        with pytest.raises(aio.AioRpcError) as error:
            await users.UpdateProfile(request, metadata=(("authorization", header),))
        assert status_of(error)[0] == grpc.StatusCode.UNAUTHENTICATED


async def test_a_token_signed_with_another_key_is_rejected_even_on_reads(
    users: UserServiceAsyncStub, sign_up: SignUp
) -> None:
    import jwt

    alice = await sign_up()
    claims = jwt.decode(alice.token, options={"verify_signature": False})
    forged = jwt.encode(claims, "another-key-" + "y" * 40, algorithm="HS256")
    with pytest.raises(aio.AioRpcError) as error:
        await users.GetUser(
            user_pb2.GetUserRequest(id=alice.user.id),
            metadata=(("authorization", f"Bearer {forged}"),),
        )
    code, details = status_of(error)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "not valid" in details


async def test_update_profile_changes_only_the_fields_that_are_set(
    users: UserServiceAsyncStub, sign_up: SignUp
) -> None:
    alice = await sign_up(display_name="Alice")
    updated = await users.UpdateProfile(
        user_pb2.UpdateProfileRequest(bio="I post things", avatar_url="https://img.example/a.png"),
        metadata=alice.metadata,
    )
    assert (updated.user.display_name, updated.user.bio) == ("Alice", "I post things")
    cleared = await users.UpdateProfile(
        user_pb2.UpdateProfileRequest(avatar_url=""), metadata=alice.metadata
    )
    assert (cleared.user.avatar_url, cleared.user.bio) == ("", "I post things")
    for request, message in [
        (user_pb2.UpdateProfileRequest(), "set at least one"),
        (user_pb2.UpdateProfileRequest(display_name="  "), "display_name is required"),
        (user_pb2.UpdateProfileRequest(bio="b" * 301), "at most 300"),
        (user_pb2.UpdateProfileRequest(avatar_url="ftp://x/y"), "http(s) URL"),
    ]:
        with pytest.raises(aio.AioRpcError) as error:
            await users.UpdateProfile(request, metadata=alice.metadata)
        code, details = status_of(error)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message in details


async def test_follow_is_idempotent_and_counted_once(
    users: UserServiceAsyncStub, sign_up: SignUp
) -> None:
    alice, bob = await sign_up(), await sign_up()
    follow = user_pb2.FollowRequest(user_id=bob.user.id)
    assert (await users.Follow(follow, metadata=alice.metadata)).changed
    assert not (await users.Follow(follow, metadata=alice.metadata)).changed
    seen_by_alice = await users.GetUser(
        user_pb2.GetUserRequest(id=bob.user.id), metadata=alice.metadata
    )
    assert seen_by_alice.user.follower_count == 1
    assert seen_by_alice.user.followed_by_viewer
    me = await users.GetUser(user_pb2.GetUserRequest(id=alice.user.id))
    assert me.user.following_count == 1
    unfollow = user_pb2.UnfollowRequest(user_id=bob.user.id)
    assert (await users.Unfollow(unfollow, metadata=alice.metadata)).changed
    assert not (await users.Unfollow(unfollow, metadata=alice.metadata)).changed
    after = await users.GetUser(user_pb2.GetUserRequest(id=bob.user.id), metadata=alice.metadata)
    assert (after.user.follower_count, after.user.followed_by_viewer) == (0, False)


async def test_follow_errors(users: UserServiceAsyncStub, sign_up: SignUp) -> None:
    alice = await sign_up()
    cases = [
        (alice.user.id, alice.metadata, grpc.StatusCode.INVALID_ARGUMENT, "yourself"),
        (str(uuid.uuid4()), alice.metadata, grpc.StatusCode.NOT_FOUND, "no user with id"),
        ("", alice.metadata, grpc.StatusCode.INVALID_ARGUMENT, "user_id is required"),
        (alice.user.id, (), grpc.StatusCode.UNAUTHENTICATED, "signed-in user"),
    ]
    for user_id, metadata, expected, message in cases:
        with pytest.raises(aio.AioRpcError) as error:
            await users.Follow(user_pb2.FollowRequest(user_id=user_id), metadata=metadata)
        assert status_of(error)[0] == expected, user_id
        assert message in status_of(error)[1]
        with pytest.raises(aio.AioRpcError) as error:
            await users.Unfollow(user_pb2.UnfollowRequest(user_id=user_id), metadata=metadata)
        assert status_of(error)[0] == expected, user_id
        assert message in status_of(error)[1]


async def test_follow_lists_page_newest_first_without_gaps_or_repeats(
    users: UserServiceAsyncStub, sign_up: SignUp
) -> None:
    star = await sign_up("star")
    fans = [await sign_up("fan") for _ in range(5)]
    for fan in fans:
        await users.Follow(user_pb2.FollowRequest(user_id=star.user.id), metadata=fan.metadata)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        response = await users.ListFollowers(
            user_pb2.ListFollowersRequest(
                user_id=star.user.id, page=page_pb2.PageRequest(page_size=2, page_token=token)
            )
        )
        seen += [u.id for u in response.users]
        pages += 1
        token = response.page.next_page_token
        if not token:
            break
    assert seen == [fan.user.id for fan in reversed(fans)]
    assert pages == 3
    following = await users.ListFollowing(user_pb2.ListFollowingRequest(user_id=fans[0].user.id))
    assert [u.id for u in following.users] == [star.user.id]
    assert following.page.next_page_token == ""


async def test_follow_list_errors(users: UserServiceAsyncStub) -> None:
    cases = [
        (user_pb2.ListFollowersRequest(user_id=str(uuid.uuid4())), grpc.StatusCode.NOT_FOUND),
        (user_pb2.ListFollowersRequest(user_id="bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (
            user_pb2.ListFollowersRequest(
                user_id=str(uuid.uuid4()), page=page_pb2.PageRequest(page_size=101)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            user_pb2.ListFollowersRequest(
                user_id=str(uuid.uuid4()), page=page_pb2.PageRequest(page_token="garbage!")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for request, expected in cases:
        with pytest.raises(aio.AioRpcError) as error:
            await users.ListFollowers(request)
        assert status_of(error)[0] == expected, request


async def test_preferences_default_then_update_by_mask(
    users: UserServiceAsyncStub, sign_up: SignUp
) -> None:
    alice = await sign_up()
    initial = await users.GetPreferences(user_pb2.GetPreferencesRequest(), metadata=alice.metadata)
    assert (initial.preferences.language, initial.preferences.time_zone) == ("en", "UTC")
    updated = await users.UpdatePreferences(
        user_pb2.UpdatePreferencesRequest(
            preferences=user_pb2.Preferences(
                time_zone="Europe/Lisbon", interests=["go", "rust", "go"], language="ignored"
            ),
            update_mask=FieldMask(paths=["time_zone", "interests"]),
        ),
        metadata=alice.metadata,
    )
    assert updated.preferences.time_zone == "Europe/Lisbon"
    assert list(updated.preferences.interests) == ["go", "rust"]
    assert updated.preferences.language == "en"
    again = await users.GetPreferences(user_pb2.GetPreferencesRequest(), metadata=alice.metadata)
    assert again.preferences == updated.preferences


async def test_preferences_errors(users: UserServiceAsyncStub, sign_up: SignUp) -> None:
    alice = await sign_up()
    cases = [
        (user_pb2.Preferences(), ["colour"], "unknown fields colour"),
        (user_pb2.Preferences(time_zone="Mars/Olympus"), ["time_zone"], "IANA time zone"),
        (user_pb2.Preferences(time_zone="America"), ["time_zone"], "IANA time zone"),
        (user_pb2.Preferences(time_zone="a" * 300), ["time_zone"], "IANA time zone"),
        (user_pb2.Preferences(language="english!"), ["language"], "BCP 47"),
        (user_pb2.Preferences(interests=["x"] * 21), ["interests"], "at most 20"),
        (user_pb2.Preferences(interests=["y" * 41]), ["interests"], "at most 40"),
    ]
    for preferences, paths, message in cases:
        with pytest.raises(aio.AioRpcError) as error:
            await users.UpdatePreferences(
                user_pb2.UpdatePreferencesRequest(
                    preferences=preferences, update_mask=FieldMask(paths=paths)
                ),
                metadata=alice.metadata,
            )
        code, details = status_of(error)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message in details
    with pytest.raises(aio.AioRpcError) as error:
        await users.GetPreferences(user_pb2.GetPreferencesRequest())
    assert status_of(error)[0] == grpc.StatusCode.UNAUTHENTICATED
