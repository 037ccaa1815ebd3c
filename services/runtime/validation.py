"""Checks shared by every servicer; each failure names the field and what it accepts."""

import uuid
from collections.abc import Sequence

from services.runtime.errors import InvalidArgument


def parse_id(value: str, field: str) -> uuid.UUID:
    """Parses a UUID field, e.g. ``parse_id(request.user_id, "user_id")``."""
    if not value:
        raise InvalidArgument(f"{field} is required")
    try:
        return uuid.UUID(value)
    except ValueError:
        shown = value if len(value) <= 60 else value[:60] + "…"
        raise InvalidArgument(f"{field} must be a UUID, got {shown!r}") from None


def parse_ids(values: Sequence[str], field: str, *, maximum: int) -> list[uuid.UUID]:
    """Parses a batch of ids, dropping duplicates but keeping first-seen order."""
    if not values:
        raise InvalidArgument(f"{field} must name at least one id")
    if len(values) > maximum:
        raise InvalidArgument(f"{field} has {len(values)} ids; at most {maximum} are allowed")
    seen: dict[uuid.UUID, None] = {}
    for index, value in enumerate(values):
        seen.setdefault(parse_id(value, f"{field}[{index}]"), None)
    return list(seen)


def check_text(value: str, field: str, *, minimum: int, maximum: int) -> str:
    """Checks a free-text field's length in characters (after trimming outer space)."""
    text = value.strip()
    if len(text) < minimum:
        raise InvalidArgument(
            f"{field} is required"
            if minimum == 1
            else f"{field} needs at least {minimum} characters"
        )
    if len(text) > maximum:
        raise InvalidArgument(f"{field} has {len(text)} characters; at most {maximum} are allowed")
    return text


def check_limit(value: int, field: str, *, default: int, maximum: int) -> int:
    """Reads a count where 0 means the default."""
    if value < 0:
        raise InvalidArgument(f"{field} must not be negative, got {value}")
    if value > maximum:
        raise InvalidArgument(f"{field} is {value}; at most {maximum} is allowed")
    return value or default
