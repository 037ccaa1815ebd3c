"""Shared field checks say which field is wrong and what it accepts."""

import uuid

import pytest
from google.protobuf import struct_pb2

from nova.common.v1 import page_pb2
from nova.content.v1 import content_pb2
from nova.user.v1 import user_pb2
from services.runtime.errors import InvalidArgument
from services.runtime.validation import (
    MAX_STRING_CHARACTERS,
    check_limit,
    check_strings,
    check_text,
    parse_id,
    parse_ids,
    validated,
)


def test_parse_id_names_the_field() -> None:
    value = uuid.uuid4()
    assert parse_id(str(value), "post_id") == value
    with pytest.raises(InvalidArgument, match="post_id is required"):
        parse_id("", "post_id")
    with pytest.raises(InvalidArgument, match="post_id must be a UUID, got 'abc'"):
        parse_id("abc", "post_id")


def test_parse_ids_dedupes_in_order_and_enforces_the_maximum() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    assert parse_ids([str(b), str(a), str(b)], "ids", maximum=3) == [b, a]
    with pytest.raises(InvalidArgument, match="ids has 4 ids; at most 3"):
        parse_ids([str(a)] * 4, "ids", maximum=3)
    with pytest.raises(InvalidArgument, match=r"ids\[1\] must be a UUID"):
        parse_ids([str(a), "x"], "ids", maximum=3)


def test_check_text_trims_and_bounds_length() -> None:
    assert check_text("  hi  ", "text", minimum=1, maximum=5) == "hi"
    with pytest.raises(InvalidArgument, match="text is required"):
        check_text("   ", "text", minimum=1, maximum=5)
    with pytest.raises(InvalidArgument, match="text has 6 characters; at most 5"):
        check_text("abcdef", "text", minimum=1, maximum=5)


def test_check_limit_zero_means_default() -> None:
    assert check_limit(0, "limit", default=3, maximum=20) == 3
    with pytest.raises(InvalidArgument, match="at most 20"):
        check_limit(21, "limit", default=3, maximum=20)


def test_check_strings_names_a_nul_in_any_field_nested_repeated_or_mapped() -> None:
    with pytest.raises(InvalidArgument, match=r"^ids\[1\] contains a NUL character"):
        check_strings(user_pb2.BatchGetUsersRequest(ids=["a", "b\x00"]))
    with pytest.raises(InvalidArgument, match=r"^page\.page_token contains a NUL"):
        check_strings(user_pb2.ListFollowingRequest(page=page_pb2.PageRequest(page_token="\x00")))
    nested = user_pb2.UpdatePreferencesRequest(
        preferences=user_pb2.Preferences(interests=["ok", "ok", "x\x00"])
    )
    with pytest.raises(InvalidArgument, match=r"^preferences\.interests\[2\] contains a NUL"):
        check_strings(nested)
    mapped = struct_pb2.Struct()
    mapped.update({"fine": "a\x00b"})
    with pytest.raises(InvalidArgument, match=r"^fields\['fine'\]\.string_value contains a NUL"):
        check_strings(mapped)
    bad_key = struct_pb2.Struct()
    bad_key.update({"k\x00": 1})
    with pytest.raises(InvalidArgument, match=r"^fields key contains a NUL"):
        check_strings(bad_key)


def test_check_strings_caps_every_text_field_and_passes_what_is_fine() -> None:
    check_strings(content_pb2.CreatePostRequest(text="é" * MAX_STRING_CHARACTERS))
    with pytest.raises(InvalidArgument, match=r"^text has 10001 characters; no field takes more"):
        check_strings(content_pb2.CreatePostRequest(text="x" * (MAX_STRING_CHARACTERS + 1)))


async def test_a_validated_servicer_checks_before_its_method_runs() -> None:
    ran: list[str] = []

    class Servicer:
        async def GetUser(self, request: user_pb2.GetUserRequest, context: object) -> str:
            ran.append(request.handle)
            return "answered"

        def helper(self) -> str:
            return "untouched"

    service = user_pb2.DESCRIPTOR.services_by_name["UserService"]
    checked = validated(Servicer(), service)
    assert await checked.GetUser(user_pb2.GetUserRequest(handle="ada"), None) == "answered"
    with pytest.raises(InvalidArgument, match=r"^handle contains a NUL"):
        await checked.GetUser(user_pb2.GetUserRequest(handle="a\x00"), None)
    assert ran == ["ada"]
    assert checked.helper() == "untouched"
