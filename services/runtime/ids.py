"""Time-ordered ids: UUIDv7 sorts by creation time, so keyset cursors and timeline scores
come straight from the id, and new rows land at the right edge of every B-tree."""

import uuid

from uuid_utils.compat import uuid7

DEFAULT_TENANT_ID = uuid.UUID(int=0)
"""The tenant every row belongs to while Nova runs single-tenant."""


def new_id() -> uuid.UUID:
    return uuid7()
