"""Issue 14, part 3: every RPC of every registered service, fuzzed. Hypothesis sends random
and hostile values to every field (tests/fuzz_messages.py builds them from the request's
descriptor), anonymously and signed in, and bodies that do not parse at all; no call may
answer INTERNAL or UNKNOWN, hang (DEADLINE_EXCEEDED after CALL_TIMEOUT) or find the server
gone (UNAVAILABLE).

The servers are the session's, in this process (tests/conftest.py): a crash in native code
ends the run, a stopped server answers UNAVAILABLE, and a call that blocks the event loop
for good trips WATCHDOG_SECONDS, which dumps every thread's stack and exits. The calls tried
are counted by status code and printed in pytest's summary.

Examples are random on a developer's machine and fixed under CI (the CI variable set:
`derandomize`, the same examples every run until the tests or Hypothesis change); set CI=1
to replay CI's examples, or pass `--hypothesis-seed` elsewhere to replay a random run.
"""

from __future__ import annotations

import base64
import faulthandler
import functools
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
import pytest
from _pytest.faulthandler import fault_handler_stderr_fd_key
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from nova.analytics.v1 import analytics_pb2
from nova.common.v1 import page_pb2
from nova.content.v1 import content_pb2, content_pb2_grpc
from nova.events.v1 import events_pb2
from nova.feed.v1 import feed_pb2
from nova.recommendation.v1 import recommendation_pb2
from nova.user.v1 import user_pb2
from services.registry import REGISTRY
from services.runtime.spec import Dependencies
from tests.conftest import SignedIn, SignUp
from tests.fuzz_messages import messages, text, wire_bytes
from tests.fuzz_tokens import authorization_headers

CALL_TIMEOUT = 5.0
"""Seconds a call may take before it counts as a hang."""
WATCHDOG_SECONDS = 60
"""A call not back by then has blocked the event loop (the client's deadline cannot fire
either): the run is ended with every thread's stack rather than left hanging."""
_watchdog_fd = 2
"""Where the watchdog writes the stacks: the real stderr pytest's faulthandler plugin
keeps (set by _real_stderr), since what reaches descriptor 2 is captured, and lost when
the watchdog ends the process."""
EXAMPLES_PER_METHOD = 100
"""Hypothesis examples per method, each sent anonymously and signed in."""
BODIES_PER_METHOD = 15
"""Bodies that do not parse, per method."""
HEADERS = 200
"""`authorization` values, each sent with one call (the auth layer is every method's)."""

NEVER = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.CANCELLED,
    }
)
"""A bug (INTERNAL, UNKNOWN), a hang (DEADLINE_EXCEEDED, CANCELLED), a server gone
(UNAVAILABLE) or a registered method not served (UNIMPLEMENTED)."""

CALLS: Counter[str] = Counter()
"""Calls tried in this run, by status code name."""

_SETTINGS = settings(
    max_examples=EXAMPLES_PER_METHOD,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

METHODS = [
    (spec.name, method) for spec in REGISTRY.services.values() for method in spec.service.methods
]


def _method_id(entry: tuple[str, MethodDescriptor]) -> str:
    return f"{entry[1].containing_service.name}/{entry[1].name}"


@dataclass(frozen=True)
class World:
    """Rows that exist, so that calls naming them get past "not found"."""

    caller: SignedIn
    ids: tuple[str, ...]
    text: tuple[tuple[str, str], ...]
    """Their handles, e-mail addresses and password, by the fields that take them."""


@pytest.fixture(scope="module")
async def world(sign_up: SignUp, channels: dict[str, aio.Channel]) -> World:
    caller, other = await sign_up("fuzz"), await sign_up("fuzzed")
    content = content_pb2_grpc.ContentServiceStub(channels["content"])
    ids = [caller.user.id, other.user.id]
    for who in (caller, other):
        post = await content.CreatePost(
            content_pb2.CreatePostRequest(text="fuzz me"), metadata=who.metadata
        )
        comment = await content.CreateComment(
            content_pb2.CreateCommentRequest(post_id=post.post.id, text="and me"),
            metadata=who.metadata,
        )
        ids += [post.post.id, comment.comment.id]
    known = [("password", caller.password)]
    for who in (caller, other):
        handle, email = who.user.handle, f"{who.user.handle}@example.com"
        known += [("handle", handle), ("handle", f"@{handle}"), ("email", email)]
        known += [("login", handle), ("login", email)]
    return World(caller=caller, ids=tuple(ids), text=tuple(known))


@pytest.fixture(scope="module", autouse=True)
def _real_stderr(request: pytest.FixtureRequest) -> None:
    global _watchdog_fd
    _watchdog_fd = request.config.stash.get(fault_handler_stderr_fd_key, 2)


@pytest.fixture(scope="module", autouse=True)
def _report_calls(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    request.config.pluginmanager.register(_Summary(), "nova-fuzz-summary")


class _Summary:
    """Prints the calls tried in pytest's summary (with or without -s)."""

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not CALLS:
            return
        by_code = ", ".join(f"{code} {count}" for code, count in CALLS.most_common())
        terminalreporter.write_line(f"fuzz: {sum(CALLS.values())} calls tried ({by_code})")


async def _send(
    channel: aio.Channel, path: str, body: bytes, metadata: Sequence[tuple[str, str]]
) -> tuple[grpc.StatusCode, str]:
    """Sends `body` as the request of `path`; returns the status it was answered with."""
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True, file=_watchdog_fd)
    try:
        await _callable(channel, path)(body, timeout=CALL_TIMEOUT, metadata=metadata)
        code, details = grpc.StatusCode.OK, ""
    except aio.AioRpcError as error:
        code, details = error.code(), error.details() or ""
    finally:
        faulthandler.cancel_dump_traceback_later()
    CALLS[code.name] += 1
    return code, details


@functools.cache
def _callable(channel: aio.Channel, path: str) -> aio.UnaryUnaryMultiCallable[bytes, bytes]:
    # No serializers: bodies go as they are, so one path sends messages and broken bytes.
    return channel.unary_unary(path, request_serializer=None, response_deserializer=None)


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _check(method: MethodDescriptor, who: str, code: grpc.StatusCode, details: str) -> None:
    assert code not in NEVER, f"{_path(method)} ({who}) answered {code.name}: {details}"
    assert code == grpc.StatusCode.OK or details.strip(), (
        f"{_path(method)} ({who}) answered {code.name} without saying why"
    )


@functools.cache
def _requests(
    method: MethodDescriptor, ids: tuple[str, ...], text: tuple[tuple[str, str], ...]
) -> st.SearchStrategy[bytes]:
    requests = messages(method.input_type, known_ids=ids, known_text=text)
    return requests.map(lambda request: request.SerializeToString())


@pytest.mark.parametrize(("service", "method"), METHODS, ids=map(_method_id, METHODS))
@_SETTINGS
@given(data=st.data())
async def test_no_field_value_makes_a_method_fail_or_hang(
    data: st.DataObject,
    service: str,
    method: MethodDescriptor,
    channels: dict[str, aio.Channel],
    world: World,
) -> None:
    body = data.draw(_requests(method, world.ids, world.text), label="request")
    for who, metadata in (("anonymous", ()), ("signed in", world.caller.metadata)):
        code, details = await _send(channels[service], _path(method), body, metadata)
        _check(method, who, code, details)


@pytest.mark.parametrize(("service", "method"), METHODS, ids=map(_method_id, METHODS))
@settings(_SETTINGS, max_examples=BODIES_PER_METHOD)
@given(data=st.data())
async def test_no_broken_body_makes_a_method_fail_or_hang(
    data: st.DataObject,
    service: str,
    method: MethodDescriptor,
    channels: dict[str, aio.Channel],
    world: World,
) -> None:
    body = data.draw(wire_bytes(_requests(method, world.ids, world.text)), label="body")
    code, details = await _send(channels[service], _path(method), body, world.caller.metadata)
    _check(method, "signed in", code, details)


@settings(_SETTINGS, max_examples=HEADERS)
@given(header=st.data())
async def test_no_authorization_header_makes_a_call_fail_or_hang(
    header: st.DataObject, channels: dict[str, aio.Channel], deps: Dependencies, world: World
) -> None:
    value = header.draw(authorization_headers(deps.tokens.secret, deps.tokens.key_id))
    body = user_pb2.GetUserRequest(handle=world.caller.user.handle).SerializeToString()
    method = user_pb2.DESCRIPTOR.services_by_name["UserService"].methods_by_name["GetUser"]
    code, details = await _send(channels["user"], _path(method), body, (("authorization", value),))
    _check(method, "any token", code, details)


async def test_every_server_still_serves(channels: dict[str, aio.Channel]) -> None:
    for name, channel in channels.items():
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, name


# Bugs the fuzzer found, one test each.


async def test_a_body_that_does_not_parse_is_refused_as_invalid(
    channels: dict[str, aio.Channel], world: World
) -> None:
    # Found by test_no_broken_body_makes_a_method_fail_or_hang, on every method: grpc.aio
    # parses a request before any layer runs, and answered protobuf's DecodeError with
    # UNKNOWN and "Unexpected <class ...>" (now the chain answers it, inside its layers).
    get_user = "/nova.user.v1.UserService/GetUser"
    bad_utf8 = b"\x0a\x02\xc3\x28"  # field 1 (id): two bytes that are no UTF-8
    code, details = await _send(channels["user"], get_user, bad_utf8, ())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a valid message" in details
    assert "String field had bad UTF-8" in details
    whole = user_pb2.GetUserRequest(handle=world.caller.user.handle).SerializeToString()
    code, details = await _send(channels["user"], get_user, whole[:-1], world.caller.metadata)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    code, details = await _send(channels["user"], get_user, whole, world.caller.metadata)
    assert code == grpc.StatusCode.OK, details


@pytest.mark.parametrize("tenant", [5, 1.5, True, [], {"id": "x"}])
async def test_a_signed_token_whose_tenant_is_no_string_is_refused(
    tenant: object, channels: dict[str, aio.Channel], deps: Dependencies, world: World
) -> None:
    # Found by test_no_authorization_header_makes_a_call_fail_or_hang: uuid.UUID(5) raises
    # AttributeError, which verify let through, so the call answered INTERNAL.
    claims = {"iss": "nova", "aud": "nova", "sub": world.caller.user.id, "tid": tenant}
    token = jwt.encode(
        {**claims, "exp": 4_102_444_800},
        deps.tokens.secret,
        algorithm="HS256",
        headers={"kid": deps.tokens.key_id},
    )
    body = user_pb2.GetUserRequest(handle=world.caller.user.handle).SerializeToString()
    code, details = await _send(
        channels["user"],
        "/nova.user.v1.UserService/GetUser",
        body,
        (("authorization", f"Bearer {token}"),),
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "the access token is not valid" in details


# The strategies themselves: the fuzzer sends what it claims to, for every field type.

_DRAWS = settings(
    database=None,
    derandomize=True,
    max_examples=400,
    phases=[Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Fixed draws, so the checks of what the strategies send are the same every run."""
_MAX_SECONDS = 253_402_300_799
"""9999-12-31T23:59:59Z, the last second a Timestamp may hold."""


@functools.cache
def _drawn(descriptor: Descriptor | None) -> list[Any]:
    """What Hypothesis draws in _DRAWS' tries, none shrunk: messages of `descriptor`, or
    for None the hostile half of every string field's values (fuzz_messages.text)."""
    drawn: list[Any] = []

    @_DRAWS
    @given(text() if descriptor is None else messages(descriptor))
    def draw(value: Any) -> None:
        drawn.append(value)

    draw()
    return drawn


@pytest.mark.parametrize(
    ("request_type", "hostile"),
    [
        (None, lambda text: "\x00" in text),
        (None, lambda text: len(text) > 10_000),
        (None, lambda text: len(text.encode()) > 4 * 2**20),
        (None, lambda text: text.startswith("urn:uuid:")),
        (None, lambda text: len(text) == 35 and text.count("-") == 4),
        (None, lambda text: _decoded(text).startswith("v2:")),
        (content_pb2.CreatePostRequest, lambda r: len(r.text) > 10_000),
        (content_pb2.ListPostsByAuthorsRequest, lambda r: len(set(r.author_ids)) >= 3000),
        (content_pb2.ListUserPostsRequest, lambda r: r.page.page_size == -(2**31)),
        (
            user_pb2.UpdatePreferencesRequest,
            lambda r: {"language", "preferences.language"} <= set(r.update_mask.paths),
        ),
        (
            recommendation_pb2.RecordFeedbackRequest,
            lambda r: r.kind not in recommendation_pb2.FeedbackKind.values(),
        ),
        (
            analytics_pb2.RecordImpressionsRequest,
            lambda r: any(i.viewed_at.seconds == _MAX_SECONDS + 1 for i in r.impressions),
        ),
        (
            analytics_pb2.RecordImpressionsRequest,
            lambda r: any(i.viewed_at.nanos < 0 for i in r.impressions),
        ),
    ],
    ids=[
        "a NUL",
        "over 10,000 characters",
        "over the 4 MiB a server receives",
        "a UUID as a URN",
        "a UUID one character short",
        "a page token of another version",
        "a request's text over 10,000 characters",
        "3,000 different ids",
        "int32's minimum",
        "a field mask of names alone and as paths",
        "an enum value no version defines",
        "a timestamp a second after 9999",
        "negative nanos",
    ],
)
def test_the_strategies_send_hostile_values(
    request_type: type[Message] | None, hostile: Callable[[Any], bool]
) -> None:
    drawn = _drawn(None if request_type is None else request_type.DESCRIPTOR)
    assert any(hostile(value) for value in drawn)


_GENERATED = [
    message
    for module in (
        user_pb2,
        content_pb2,
        page_pb2,
        events_pb2,
        feed_pb2,
        recommendation_pb2,
        analytics_pb2,
    )
    for message in module.DESCRIPTOR.message_types_by_name.values()
]
"""Every message type in gen/, served or not yet (timestamps, enums, Any among them)."""


def test_every_message_type_in_gen_has_a_strategy() -> None:
    # Building one reaches every field's type (an unknown one raises TypeError), and
    # validating it checks each strategy's arguments; the draws above check the values.
    for message in _GENERATED:
        messages(message).validate()


def _decoded(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("latin-1")
    except ValueError:
        return ""
