"""Relay connections over the services' keyset pages.

An edge's cursor is the page token the service would return after that post, so any
edge's cursor (not only the page's last) works as `after`.
"""

import uuid
from collections.abc import Sequence
from typing import Any

from nova.content.v1 import content_pb2
from services.runtime.pagination import encode_token


def post_connection(posts: Sequence[content_pb2.Post], next_page_token: str) -> dict[str, Any]:
    edges = [{"cursor": encode_token(uuid.UUID(post.id)), "node": post} for post in posts]
    return {
        "edges": edges,
        "page_info": {
            "has_next_page": bool(next_page_token),
            "has_previous_page": False,
            "start_cursor": edges[0]["cursor"] if edges else None,
            "end_cursor": edges[-1]["cursor"] if edges else None,
        },
    }
