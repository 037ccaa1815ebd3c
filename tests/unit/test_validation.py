"""Shared field checks say which field is wrong and what it accepts."""

import uuid

import pytest

from services.runtime.errors import InvalidArgument
from services.runtime.validation import check_limit, check_text, parse_id, parse_ids


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
