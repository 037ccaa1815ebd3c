"""What the gateway makes of a service's refusal (RATE_LIMITED for one caller's, the wait in
retryAfterSeconds), and the client address it forwards (an IP, or nothing)."""

import grpc
from grpc import aio

from gateway.errors import BackendError
from interceptors.client.forwarded import forwarded_for
from interceptors.client.refusal import Refusal, refusal_of
from interceptors.context import CLIENT_ADDRESS_KEY, PUSHBACK_KEY, REFUSAL_KEY

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_refusal_of_this_caller_is_rate_limited_with_the_wait_in_whole_seconds() -> None:
    error = BackendError(
        EXHAUSTED, "too many log-in attempts …; try again in 13 s", refusal=Refusal("caller", 12.3)
    )
    assert error.extensions == {"code": "RATE_LIMITED", "retryAfterSeconds": 13}
    assert error.message == "too many log-in attempts …; try again in 13 s"


def test_other_exhaustion_keeps_its_code_and_says_when_it_can_when_the_service_did() -> None:
    pool = BackendError(EXHAUSTED, "too many sign-ins in progress", refusal=Refusal("method", 1))
    assert pool.extensions == {"code": "RESOURCE_EXHAUSTED", "retryAfterSeconds": 1}
    bare = BackendError(EXHAUSTED, "overloaded", refusal=Refusal(None, None))
    assert bare.extensions == {"code": "RESOURCE_EXHAUSTED"}
    breaker = BackendError(grpc.StatusCode.UNAVAILABLE, "open", refusal=Refusal(None, 2.0))
    assert breaker.extensions == {"code": "UNAVAILABLE"}


def test_the_refusal_is_read_from_trailing_metadata() -> None:
    trailing = aio.Metadata((PUSHBACK_KEY, "1500"), (REFUSAL_KEY, "caller"))
    error = aio.AioRpcError(EXHAUSTED, aio.Metadata(), trailing, "x", None)
    assert refusal_of(error) == Refusal("caller", 1.5)
    assert refusal_of(error).of_caller
    plain = aio.AioRpcError(EXHAUSTED, aio.Metadata(), aio.Metadata(), "x", None)
    assert refusal_of(plain) == Refusal(None, None)


def test_only_an_ip_address_is_forwarded() -> None:
    assert forwarded_for("203.0.113.7") == ((CLIENT_ADDRESS_KEY, "203.0.113.7"),)
    assert forwarded_for("2001:DB8::1") == ((CLIENT_ADDRESS_KEY, "2001:db8::1"),)
    assert forwarded_for("testclient") == ()
    assert forwarded_for(None) == ()
