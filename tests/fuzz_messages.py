"""Hypothesis strategies for any protobuf message, built from its descriptor, with the values
a hostile caller sends: each integer type's edges, unknown enum values, text over the limits
and with NULs, ids that look like UUIDs and ids that almost do, page tokens, field masks
naming real and made-up fields, timestamps out of range, thousands of repeated elements.

``messages(descriptor, known_ids=..., known_text=...)`` is the entry point; the ids of rows
that exist, and text that matches them (handles, e-mail addresses, a password), let a share
of the calls get past "not found" into the code behind it. ``wire_bytes`` turns encoded
messages into bodies a protobuf library would never write (cut short, bad UTF-8, fields of
the wrong wire type), as a client in another language, or none, can.
(tests/fuzz_tokens.py makes the `authorization` metadata.)

Strings are never unpaired surrogates: protobuf for Python refuses to hold one (and to
parse one, which ``wire_bytes`` sends as bad UTF-8 instead).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

MAX_DEPTH = 3
"""Nested messages deeper than this are left unset (Struct and Value nest without end)."""

MANY = (99, 100, 101, 1000, 1001, 3000)
"""Lengths of the long repeated fields: each side of the services' batch limits (100 ids,
1,000 authors) and a few thousand."""

LONG = (81, 254, 255, 501, 5000, 5001, 9999, 10_000, 10_001, 100_000, 4_200_000)
"""Lengths of the long strings: each side of the fields' own limits and of the 10,000
characters no field takes, and past the 4 MiB a gRPC server receives. (Elements of the
long repeated fields are short, or one body would be gigabytes.)"""

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}

HOSTILE_TEXT = (
    "",
    " ",
    "\t\r\n",
    "\x00",
    "a\x00b",
    "\x7f\x1b[2J",
    "\u200b",
    "\u202eevil",
    "\ufeff",
    "e\u0301",
    "\uffff",
    "\U0010ffff",
    "😀",
    "🏳️‍🌈",
    "ﷺ",
    "%s%n%x",
    "{0}{__class__}",
    "'; DROP TABLE users; --",
    "\\",
    "../../../../etc/passwd",
    "/etc/passwd",
    "@",
    "@@",
    "a@b.c",
    "a@b",
    "http://",
    "https://example.com/a.png",
    "javascript:alert(1)",
    "null",
    "true",
    "0",
    "-1",
    "NaN",
    "Infinity",
    "UTC",
    "Europe/Lisbon",
    "America",
    "right/UTC",
    "zone.tab",
    "en",
    "pt-BR",
    "en-" + "-".join(["abcdefgh"] * 4),
    "*",
    "a.b",
    "Bearer",
)

_HOSTILE_CHARACTERS = ("a", "é", "😀", " ", "\x00", "@", "-")


def text(known_ids: Sequence[str] = (), *, long: bool = True) -> st.SearchStrategy[str]:
    """Any string a field may be sent: short random text, hostile samples, very long text
    (unless not `long`), UUIDs real and almost, handles and e-mail addresses, page tokens."""
    choices: list[st.SearchStrategy[str]] = [
        st.text(max_size=40),
        st.sampled_from(HOSTILE_TEXT),
        *([_long_text()] if long else []),
        ids(known_ids),
        st.from_regex(r"@?[A-Za-z0-9_]{1,32}", fullmatch=True),
        st.from_regex(r"[a-z0-9._%+-]{1,20}@[a-z0-9.-]{1,20}\.[a-z]{2,6}", fullmatch=True),
        page_tokens(known_ids),
    ]
    return st.one_of(choices)


_WORDS: st.SearchStrategy[str] = st.text(
    st.characters(categories=["L", "N", "Zs"]), min_size=1, max_size=30
)
_PLAUSIBLE: dict[str, st.SearchStrategy[str]] = {
    "handle": st.from_regex(r"[A-Za-z0-9_]{3,30}", fullmatch=True),
    "email": st.from_regex(r"[a-z0-9]{1,20}@[a-z0-9]{1,20}\.[a-z]{2,6}", fullmatch=True),
    "password": st.text(min_size=8, max_size=40),
    "zone": st.sampled_from(["UTC", "Europe/Lisbon", "America/Sao_Paulo", "Asia/Kolkata"]),
    "language": st.sampled_from(["en", "pt-BR", "zh-Hant-TW"]),
    "url": st.sampled_from(["https://example.com/a.png", "http://x.io", ""]),
}
"""What a string field may hold, by the last word of its name ("time_zone": "zone");
other fields get words. Ids and page tokens are made from the known ids."""


def plausible_text(
    name: str, known_ids: Sequence[str] = (), known_text: Sequence[tuple[str, str]] = ()
) -> st.SearchStrategy[str]:
    """What a well-behaved caller puts in the string field `name`, by the last word of the
    name ("user_id", "author_ids": an id; "page_token"; "handle"), and half the time a
    value `known_text` pairs with that word (("login", "ada"): one that exists). Half of
    a hostile message's strings are these, so calls get past validation too."""
    word = name.rsplit("_", 1)[-1].removesuffix("s")
    if word == "id":
        return st.sampled_from([*known_ids, str(uuid.UUID(int=1))]) | st.uuids().map(str)
    if word == "token":
        return st.sampled_from(["", *(_page_token(uuid.UUID(value)) for value in known_ids)])
    plausible = _PLAUSIBLE.get(word, _WORDS)
    known = [value for field, value in known_text if field == word]
    return _half(st.sampled_from(known), plausible) if known else plausible


def _page_token(after: uuid.UUID) -> str:
    """A token as the services write them (services/runtime/pagination.py)."""
    return base64.urlsafe_b64encode(b"v1:" + after.bytes).rstrip(b"=").decode()


def _long_text() -> st.SearchStrategy[str]:
    return st.builds(
        lambda character, length: character * length,
        st.sampled_from(_HOSTILE_CHARACTERS),
        st.sampled_from(LONG),
    )


def ids(known_ids: Sequence[str] = ()) -> st.SearchStrategy[str]:
    """UUIDs as a service prints them, the same UUID written the ways Python also parses
    (braces, urn:, capitals, no dashes), and strings one step from a UUID."""
    uuids = st.uuids() | st.sampled_from([uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)])
    if known_ids:
        uuids = uuids | st.sampled_from([uuid.UUID(value) for value in known_ids])
    spellings: tuple[Callable[[uuid.UUID], str], ...] = (
        str,
        str,
        lambda u: str(u).upper(),
        lambda u: "{" + str(u) + "}",
        lambda u: "urn:uuid:" + str(u),
        lambda u: u.hex,
        lambda u: str(u)[:-1],
        lambda u: str(u) + "0",
        lambda u: str(u).replace("-", "_"),
        lambda u: " " + str(u) + " ",
        lambda u: str(u).replace("0", "\u0660").replace("1", "\uff11"),
        lambda u: str(u)[:8] + "-zzzz" + str(u)[13:],
    )
    return st.builds(lambda u, spell: spell(u), uuids, st.sampled_from(spellings))


def page_tokens(known_ids: Sequence[str] = ()) -> st.SearchStrategy[str]:
    """Tokens shaped like the services' (base64url of b"v1:" and an id), and near misses:
    another version, a short id, standard base64, padding, random bytes."""
    raw = st.one_of(
        st.builds(lambda u: b"v1:" + u.bytes, st.uuids()),
        st.builds(lambda u: b"v1:" + u.bytes[:15], st.uuids()),
        st.builds(lambda u: b"v2:" + u.bytes, st.uuids()),
        st.binary(max_size=40),
    )
    if known_ids:
        raw = raw | st.sampled_from([b"v1:" + uuid.UUID(value).bytes for value in known_ids])
    encodings: tuple[Callable[[bytes], str], ...] = (
        lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode(),
        lambda b: base64.urlsafe_b64encode(b).decode(),
        lambda b: base64.b64encode(b).decode(),
        lambda b: base64.urlsafe_b64encode(b).decode()[:-3],
        lambda b: "=" + base64.urlsafe_b64encode(b).decode(),
    )
    return st.builds(lambda b, encode: encode(b), raw, st.sampled_from(encodings))


def integers(kind: int) -> st.SearchStrategy[int]:
    """Any value of an integer field type, its edges (0, ±1, min, max) and small counts
    often."""
    low, high = _INT_RANGES[kind]
    edges = sorted({value for value in (0, 1, -1, 2, low, low + 1, high - 1, high) if low <= value})
    return st.sampled_from(edges) | st.integers(0, 101) | st.integers(low, high)


def field_names(descriptor: Descriptor, depth: int = MAX_DEPTH) -> list[str]:
    """Every field name under `descriptor`, alone and as a path ("preferences", "language",
    "preferences.language"), for field masks: real names get past the first check."""
    names: list[str] = []
    for field in descriptor.fields:
        names.append(field.name)
        if field.message_type is not None and not field.is_repeated and depth > 0:
            inner = field_names(field.message_type, depth - 1)
            names += [*inner, *(f"{field.name}.{name}" for name in inner)]
    return list(dict.fromkeys(names))


def messages(
    descriptor: Descriptor,
    *,
    known_ids: Sequence[str] = (),
    known_text: Sequence[tuple[str, str]] = (),
    depth: int = MAX_DEPTH,
) -> st.SearchStrategy[Message]:
    """Messages of `descriptor`'s type, most fields set. Half are hostile: each string is
    plausible or hostile at even odds, each number any of its type, repeated fields long.
    The other half are plausible throughout (short lists, small counts), so that calls
    that need every field right (sign-up, sign-in) get past validation too."""
    names = field_names(descriptor)
    return _half(
        _Builder(known_ids, known_text, names, mode="plausible").message(descriptor, depth),
        _Builder(known_ids, known_text, names, mode="hostile").message(descriptor, depth),
    )


Mode = Literal["hostile", "plausible", "bulk"]


class _Builder:
    """Builds one request type's strategies in one mode: "hostile", "plausible", or "bulk"
    (the elements of a hostile builder's long repeated fields: short text, no long lists).
    The known ids and text, and the field names for masks, are the request's."""

    def __init__(
        self,
        known_ids: Sequence[str],
        known_text: Sequence[tuple[str, str]],
        names: Sequence[str],
        *,
        mode: Mode,
    ) -> None:
        self._mode = mode
        self._known = (tuple(known_ids), tuple(known_text))
        self._names = list(names)
        self._text = text(known_ids, long=mode == "hostile")
        self._bulk = (
            _Builder(known_ids, known_text, names, mode="bulk") if mode == "hostile" else None
        )

    def message(self, descriptor: Descriptor, depth: int) -> st.SearchStrategy[Message]:
        special = self._well_known(descriptor)
        if special is not None:
            return special
        cls = message_factory.GetMessageClass(descriptor)
        fields: dict[str, st.SearchStrategy[Any]] = {}
        for field in descriptor.fields:
            if field.message_type is not None and depth <= 0:
                continue
            fields[field.name] = _often(self.field(field, depth), st.none())
        return st.fixed_dictionaries(fields).map(lambda values: _build(cls, descriptor, values))

    def field(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key = self.single(entry.fields_by_name["key"], depth)
            value = self.single(entry.fields_by_name["value"], depth - 1)
            return st.dictionaries(key, value, max_size=4)
        inner = depth - 1 if entry is not None else depth
        single = self.single(field, inner)
        if not field.is_repeated:
            return single
        lists = st.lists(single, max_size=4)
        if self._bulk is not None:
            lists = lists | _many(self._bulk.single(field, inner))
            if field.type == FieldDescriptor.TYPE_STRING:
                lists = lists | _distinct_ids()
        return lists

    def single(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        kind = field.type
        plausible = self._mode == "plausible"
        if kind == FieldDescriptor.TYPE_STRING:
            sensible = plausible_text(field.name, *self._known)
            return sensible if plausible else _half(sensible, self._text)
        if kind == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=64) | st.builds(bytes, st.sampled_from([0, 10_001, 100_000]))
        if kind == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if kind == FieldDescriptor.TYPE_DOUBLE:
            return st.floats(0, 1e6) if plausible else st.floats()
        if kind == FieldDescriptor.TYPE_FLOAT:
            return st.floats(0, 1e6, width=32) if plausible else st.floats(width=32)
        if kind == FieldDescriptor.TYPE_ENUM:
            enum = field.enum_type
            assert enum is not None
            numbers = st.sampled_from([value.number for value in enum.values])
            if plausible or enum.is_closed:
                return numbers
            # An open (proto3) enum field holds any int32: a newer client's value.
            return numbers | integers(FieldDescriptor.TYPE_INT32)
        if kind in _INT_RANGES:
            return st.integers(0, 101) if plausible else integers(kind)
        if kind in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
            assert field.message_type is not None
            return self.message(field.message_type, depth)
        raise TypeError(f"no strategy for {field.full_name} (type {kind})")

    def _well_known(self, descriptor: Descriptor) -> st.SearchStrategy[Message] | None:
        cls = message_factory.GetMessageClass(descriptor)
        plausible = self._mode == "plausible"
        if descriptor.full_name == "google.protobuf.Timestamp":
            if plausible:
                seconds: st.SearchStrategy[int] = st.integers(0, 4_102_444_800)
                nanos: st.SearchStrategy[int] = st.integers(0, 999_999_999)
            else:
                # The range Timestamp allows: 0001-01-01 to 9999-12-31, and a second beyond.
                seconds = st.sampled_from(
                    [0, -1, -62_135_596_800, -62_135_596_801, 253_402_300_799, 253_402_300_800]
                ) | integers(FieldDescriptor.TYPE_INT64)
                nanos = st.sampled_from([0, -1, 999_999_999, 1_000_000_000]) | integers(
                    FieldDescriptor.TYPE_INT32
                )
            return st.builds(lambda s, n: cls(seconds=s, nanos=n), seconds, nanos)
        if descriptor.full_name == "google.protobuf.FieldMask":
            names = st.sampled_from(self._names) if self._names else self._text
            path = names if plausible else _half(names, self._text)
            return st.builds(lambda paths: cls(paths=paths), st.lists(path, max_size=6))
        return None


def _half(first: st.SearchStrategy[Any], second: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`first` as often as `second`, however many branches `second` has: `first | second`
    would choose evenly among all of their branches."""
    return st.booleans().flatmap(lambda is_first: first if is_first else second)


def _often(usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`usual` three times in four, `rare` the fourth (a field left unset)."""
    return st.integers(0, 3).flatmap(lambda draw: rare if draw == 0 else usual)


def _build(cls: Any, descriptor: Descriptor, values: dict[str, Any]) -> Message:
    message: Message = cls()
    for name, value in values.items():
        if value is None:
            continue
        field = descriptor.fields_by_name[name]
        target = getattr(message, name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if isinstance(item, Message):
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            target.extend(value)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def _many(single: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    """A long list built from a few drawn elements, repeated: drawing thousands one by one
    would take Hypothesis longer than the call."""
    return st.builds(
        lambda few, length: (few * length)[:length],
        st.lists(single, min_size=1, max_size=3),
        st.sampled_from(MANY),
    )


def _distinct_ids() -> st.SearchStrategy[list[str]]:
    """Many different UUIDs, which no de-duplication shrinks."""
    return st.builds(
        lambda start, length: [str(uuid.UUID(int=start + i)) for i in range(length)],
        st.integers(0, 2**120),
        st.sampled_from(MANY),
    )


def wire_bytes(encoded: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Request bodies no protobuf library writes, from `encoded` messages: one cut short,
    with a string field holding bad UTF-8, a field of the wrong wire type, a length past
    the end; groups nested past the parser's limit; random bytes."""
    field_numbers = st.integers(1, 20)
    return st.one_of(
        st.builds(lambda body, cut: body[: max(0, len(body) - cut)], encoded, st.integers(1, 8)),
        st.builds(
            lambda body, number, junk: body + _tag(number, 2) + bytes([len(junk)]) + junk,
            encoded,
            field_numbers,
            st.sampled_from(
                [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"a\x80b", b"\xf4\x90\x80\x80"]
            ),
        ),
        st.builds(
            lambda body, number, wire: body + _tag(number, wire) + b"\x01",
            encoded,
            field_numbers,
            st.sampled_from([0, 1, 3, 4, 5, 6, 7]),
        ),
        st.builds(
            lambda body, number: body + _tag(number, 2) + b"\xff\xff\xff\x0f",
            encoded,
            field_numbers,
        ),
        st.builds(
            lambda depth: _tag(15, 3) * depth + _tag(15, 4) * depth, st.sampled_from([101, 5000])
        ),
        st.binary(max_size=64),
    )


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)
