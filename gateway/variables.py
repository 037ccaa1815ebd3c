"""Checks on a request's variables JSON before anything reads them: Unicode text only,
and bounded nesting and size.

The body limit bounds the bytes, not the shape: a megabyte of `[[[[…]]]]` is 500,000
levels, and graphql-core coerces variables recursively, so the depth and the number of
values are bounded here, walking the JSON without recursion (a client chooses how deeply
it nests).
"""

from typing import Any

from gateway.errors import BadRequest, LimitExceeded
from gateway.settings import GatewaySettings


def check_unicode(where: str, value: str) -> None:
    """Refuses an unpaired surrogate (JSON's "\\ud800" escape allows one; it is not
    Unicode text, and no service, nor the query's hash, could be given it)."""
    if value.isascii():
        return
    try:
        value.encode()
    except UnicodeEncodeError:
        raise BadRequest(
            f"{where} contains an unpaired surrogate, which is not Unicode text"
        ) from None


def check_variables(variables: dict[str, Any], settings: GatewaySettings) -> None:
    """Depth (a variable's value is at 1), the count of values, and the text of each
    string. Values are counted as a container is opened, before its items are queued, so
    a million-item list is refused without a million queue entries; a path is only
    spelled out for the error that names it."""
    seen = len(variables)
    _check_count(seen, settings)
    for name in variables:
        check_unicode("a variable's name", name)
    pending: list[tuple[tuple[str | int, ...], Any]] = [
        ((f"${name}",), value) for name, value in variables.items()
    ]
    while pending:
        path, value = pending.pop()
        if len(path) > settings.max_variables_depth:
            raise LimitExceeded(
                f"variable {_spelled(path)} is nested {len(path)} levels deep; at most "
                f"{settings.max_variables_depth} are allowed (maxVariablesDepth)",
                limit="maxVariablesDepth",
                value=len(path),
                maximum=settings.max_variables_depth,
            )
        if isinstance(value, str):
            check_unicode(f"variable {_spelled(path)}", value)
        elif isinstance(value, dict):
            seen += len(value)
            _check_count(seen, settings)
            for key in value:
                check_unicode(f"a key in variable {_spelled(path)}", key)
            pending.extend(((*path, key), item) for key, item in value.items())
        elif isinstance(value, list):
            seen += len(value)
            _check_count(seen, settings)
            pending.extend(((*path, index), item) for index, item in enumerate(value))


def _check_count(seen: int, settings: GatewaySettings) -> None:
    if seen > settings.max_variable_values:
        raise LimitExceeded(
            f"the variables hold more than {settings.max_variable_values} values "
            "(maxVariableValues)",
            limit="maxVariableValues",
            value=seen,
            maximum=settings.max_variable_values,
        )


def _spelled(path: tuple[str | int, ...]) -> str:
    """("$input", "tags", 0) -> "$input.tags[0]"."""
    return "".join(
        f"[{part}]" if isinstance(part, int) else (part if i == 0 else f".{part}")
        for i, part in enumerate(path)
    )
