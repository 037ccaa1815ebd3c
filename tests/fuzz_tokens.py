"""Hypothesis strategies for the `authorization` metadata of a call: what the auth layer of
every service must answer UNAUTHENTICATED (or accept), never INTERNAL. Values are printable
ASCII, the only text gRPC's client sends in metadata.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid

from hypothesis import strategies as st

_JSON: st.SearchStrategy[str] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
).map(json.dumps)
"""Any JSON text, with the NaN and infinities Python's json writes and reads."""

_HOSTILE_JSON = st.one_of(
    st.builds(
        lambda pattern, times: pattern * times,
        st.sampled_from(["[", '{"a":', "9"]),
        st.sampled_from([1, 2000]),
    ),
    st.builds(lambda digits: "9" * digits, st.just(5000)),
    st.sampled_from(["1e999999", "", "{", '"\\ud800"']),
)
"""JSON nested past any parser's limit (2,000 deep), numbers past a float's and past the
4,300 digits Python parses, and broken JSON."""

_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
"""What gRPC lets a text metadata value hold (its client refuses anything else)."""


def authorization_headers(secret: str, key_id: str) -> st.SearchStrategy[str]:
    """`authorization` values, in four kinds as often each: tokens signed with `secret`
    (their header naming `key_id`) whose claims are a real token's with a few changed to
    any JSON or left out, what a holder of the key or a bug in the issuer could send;
    signed tokens of any JSON at all; unsigned tokens shaped like a JWT; any printable
    text, after "Bearer" or another scheme or alone. Signed by hand (HS256 is an HMAC over
    the first two parts): PyJWT's encoder refuses claims of the wrong type, which its
    decoder must survive."""
    any_json = _JSON | _HOSTILE_JSON
    header = f'{{"alg": "HS256", "typ": "JWT", "kid": {json.dumps(key_id)}}}'
    claim = st.sampled_from(['"nova"', "2e9", "1e300", "9223372036854775808", "null"])
    claim = claim | _JSON | st.uuids().map(lambda u: json.dumps(str(u)))
    claims = st.builds(
        _claims,
        st.dictionaries(st.sampled_from(_CLAIMS), claim, max_size=2),
        st.sets(st.sampled_from(_CLAIMS), max_size=1),
    )
    printable = st.text(_PRINTABLE, max_size=60)
    return st.one_of(
        st.builds(lambda body: "Bearer " + _signed(secret, header, body), claims),
        st.builds(lambda head, body: "Bearer " + _signed(secret, head, body), any_json, any_json),
        st.builds(
            lambda head, body, signature: "Bearer " + _token(head, body, signature),
            any_json,
            any_json,
            printable,
        ),
        st.builds(lambda scheme, rest: scheme + rest, st.sampled_from(_SCHEMES), printable),
    )


_VALID_CLAIMS = {
    "iss": '"nova"',
    "aud": '"nova"',
    "sub": json.dumps(str(uuid.UUID(int=1))),
    "tid": json.dumps(str(uuid.UUID(int=0))),
    "handle": '"fuzz"',
    "exp": "4102444800",
}
_CLAIMS = (*_VALID_CLAIMS, "iat", "nbf")


def _claims(changed: dict[str, str], removed: set[str]) -> str:
    pairs = {**_VALID_CLAIMS, **changed}
    return "{" + ", ".join(f'"{k}": {v}' for k, v in pairs.items() if k not in removed) + "}"


_SCHEMES = ("Bearer ", "bearer ", "BEARER ", "Basic ", "Bearer", " ", "")


def _token(header: str, claims: str, signature: str) -> str:
    return f"{_b64(header.encode())}.{_b64(claims.encode())}.{signature}"


def _signed(secret: str, header: str, claims: str) -> str:
    unsigned = f"{_b64(header.encode())}.{_b64(claims.encode())}"
    mac = hmac.new(secret.encode(), unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{_b64(mac)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
