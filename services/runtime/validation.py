"""Checks shared by every servicer; each failure names the field and what it accepts.

`validated(servicer, service)` is how a service registers its servicer: every request's
text is checked before a method runs (check_strings), so no field can carry what
PostgreSQL refuses (a NUL) or more than any field may hold, whatever the method checks
itself.
"""

import functools
import inspect
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from services.runtime.errors import InvalidArgument

S = TypeVar("S")

MAX_STRING_CHARACTERS = 10_000
"""The most any text field of a request may hold, whatever its method allows (the longest
legitimate one is a post: 5,000). Methods check their fields' own, smaller limits."""


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


def check_strings(message: Message, prefix: str = "") -> None:
    """Refuses text that no field may carry, naming the field ("page.page_token",
    "ids[3]"): a NUL character (PostgreSQL stores none) or more than
    MAX_STRING_CHARACTERS. Walks the fields that are set, into nested messages. (An
    unpaired surrogate cannot reach a servicer: protobuf refuses to hold one.)"""
    for field, value in message.ListFields():
        name = prefix + field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            if field.is_repeated:
                for index, text in enumerate(value):
                    _check_string(text, f"{name}[{index}]")
            else:
                _check_string(value, name)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            entry = field.message_type
            if entry is not None and entry.GetOptions().map_entry:
                for key, item in value.items():
                    if isinstance(key, str):
                        _check_string(key, f"{name} key")
                    if isinstance(item, str):
                        _check_string(item, f"{name}[{key!r}]")
                    elif isinstance(item, Message):
                        check_strings(item, f"{name}[{key!r}].")
            elif field.is_repeated:
                for index, item in enumerate(value):
                    check_strings(item, f"{name}[{index}].")
            else:
                check_strings(value, name + ".")


def _check_string(text: str, field: str) -> None:
    if len(text) > MAX_STRING_CHARACTERS:
        raise InvalidArgument(
            f"{field} has {len(text)} characters; no field takes more than {MAX_STRING_CHARACTERS}"
        )
    if "\x00" in text:
        raise InvalidArgument(f"{field} contains a NUL character (U+0000), which text cannot hold")


def validated(servicer: S, service: ServiceDescriptor) -> S:
    """`servicer`, whose methods of `service` with a unary request check it with
    check_strings first; streaming-request methods are left as they are (none yet)."""
    return _Validated(servicer, frozenset(method.name for method in service.methods))  # type: ignore[return-value]


class _Validated:
    def __init__(self, servicer: object, methods: frozenset[str]) -> None:
        self._servicer = servicer
        self._methods = methods

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._servicer, name)
        if name not in self._methods or not inspect.iscoroutinefunction(found):
            return found
        return _checking(found)


def _checking(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def checked(request: Message, context: Any) -> Any:
        check_strings(request)
        return await method(request, context)

    return checked
