"""Keyset pagination: a page token is the opaque, versioned id of the last item returned.

Ids are UUIDv7, so "items older than the cursor" is an index range scan, stable while
new items arrive (unlike OFFSET)."""

import base64
import binascii
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from nova.common.v1 import page_pb2
from services.runtime.errors import InvalidArgument

_PREFIX = b"v1:"

NEWEST_CURSOR = uuid.UUID(int=(1 << 128) - 1)
"""Sorts after every id. A first page asks for rows older than this rather than passing
NULL, so `id < cursor` stays an index range condition in generic plans too."""
T = TypeVar("T")


@dataclass(frozen=True)
class Page:
    size: int
    after: uuid.UUID | None
    """Return items strictly older than this id; None for the first page."""


def read_page(request: page_pb2.PageRequest, *, default: int = 20, maximum: int = 100) -> Page:
    if request.page_size < 0:
        raise InvalidArgument(f"page.page_size must not be negative, got {request.page_size}")
    if request.page_size > maximum:
        raise InvalidArgument(
            f"page.page_size is {request.page_size}; at most {maximum} is allowed"
        )
    return Page(size=request.page_size or default, after=decode_token(request.page_token))


def decode_token(token: str) -> uuid.UUID | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4))
        if raw.startswith(_PREFIX):
            return uuid.UUID(bytes=raw[len(_PREFIX) :])
    except (binascii.Error, ValueError):
        pass
    raise InvalidArgument(
        "page.page_token is not one this method issued; pass next_page_token from the previous "
        "page, or leave it empty for the first page"
    )


def encode_token(last_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(_PREFIX + last_id.bytes).rstrip(b"=").decode()


def paginate(
    rows: Sequence[T], page: Page, key: Callable[[T], uuid.UUID]
) -> tuple[list[T], page_pb2.PageResponse]:
    """Cuts a page from rows fetched with ``LIMIT page.size + 1``: the extra row only says
    that another page exists, so the last page never carries a token to an empty one. The
    response also carries each kept row's own token (item_tokens), for clients that resume
    from any item (the gateway's edge cursors)."""
    kept = list(rows[: page.size])
    tokens = [encode_token(key(row)) for row in kept]
    more = len(rows) > page.size
    return kept, page_pb2.PageResponse(
        next_page_token=tokens[-1] if more else "", item_tokens=tokens
    )
