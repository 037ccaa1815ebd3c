"""Page tokens round-trip, reject what they did not issue, and never point at an empty page."""

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nova.common.v1 import page_pb2
from services.runtime.errors import InvalidArgument
from services.runtime.pagination import Page, decode_token, encode_token, paginate, read_page


@given(st.uuids())
def test_tokens_round_trip(value: uuid.UUID) -> None:
    assert decode_token(encode_token(value)) == value


@pytest.mark.parametrize("token", ["garbage!", "djE6", "aGVsbG8gd29ybGQ", "%%%"])
def test_tokens_it_did_not_issue_are_invalid_arguments(token: str) -> None:
    with pytest.raises(InvalidArgument, match="page_token is not one this method issued"):
        decode_token(token)


def test_page_size_defaults_and_limits() -> None:
    assert read_page(page_pb2.PageRequest()).size == 20
    assert read_page(page_pb2.PageRequest(page_size=7)).size == 7
    with pytest.raises(InvalidArgument, match="at most 100"):
        read_page(page_pb2.PageRequest(page_size=101))
    with pytest.raises(InvalidArgument, match="must not be negative"):
        read_page(page_pb2.PageRequest(page_size=-1))


def test_the_extra_row_only_signals_a_next_page() -> None:
    ids = [uuid.uuid4() for _ in range(4)]
    page = Page(size=3, after=None)
    kept, response = paginate(ids, page, key=lambda i: i)
    assert kept == ids[:3]
    assert decode_token(response.next_page_token) == ids[2]
    kept, response = paginate(ids[:3], page, key=lambda i: i)
    assert kept == ids[:3]
    assert response.next_page_token == ""


def test_each_item_carries_the_token_that_resumes_after_it() -> None:
    ids = [uuid.uuid4() for _ in range(4)]
    kept, response = paginate(ids, Page(size=3, after=None), key=lambda i: i)
    assert [decode_token(token) for token in response.item_tokens] == kept
    assert response.item_tokens[-1] == response.next_page_token
    _, last = paginate(ids[:2], Page(size=3, after=None), key=lambda i: i)
    assert [decode_token(token) for token in last.item_tokens] == ids[:2]
    assert last.next_page_token == ""
