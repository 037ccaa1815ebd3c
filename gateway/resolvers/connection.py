"""Relay connections over the services' keyset pages.

An edge's cursor is the page token the service gives for that post (PageResponse's
item_tokens, opaque here), so any edge's cursor (not only the page's last) works as `after`.
"""

from collections.abc import Sequence
from typing import Any

from nova.common.v1 import page_pb2
from nova.content.v1 import content_pb2


def post_connection(
    posts: Sequence[content_pb2.Post], page: page_pb2.PageResponse
) -> dict[str, Any]:
    edges = [
        {"cursor": cursor, "node": post}
        for post, cursor in zip(posts, page.item_tokens, strict=True)
    ]
    return {
        "edges": edges,
        "page_info": {
            "has_next_page": bool(page.next_page_token),
            "has_previous_page": False,
            "start_cursor": edges[0]["cursor"] if edges else None,
            "end_cursor": edges[-1]["cursor"] if edges else None,
        },
    }
