"""The seed sends a write again while a service refuses it before doing anything
(RESOURCE_EXHAUSTED) or aborts it on a conflict (ABORTED), after the wait the refusal
names or, without one, a doubling backoff; any other failure ends the seed at once."""

import time
from collections.abc import Awaitable, Callable

import grpc
import pytest
from grpc import aio

from interceptors.context import PUSHBACK_KEY
from services.cli.seed import _when_admitted


def _error(code: grpc.StatusCode, trailing: tuple[tuple[str, str], ...] = ()) -> aio.AioRpcError:
    return aio.AioRpcError(code, aio.Metadata(), aio.Metadata(*trailing), "busy", None)


def _failing(errors: list[aio.AioRpcError]) -> tuple[Callable[[], Awaitable[str]], list[float]]:
    sent: list[float] = []

    async def send() -> str:
        sent.append(time.monotonic())
        if errors:
            raise errors.pop(0)
        return "done"

    return send, sent


async def test_a_refusal_without_a_hint_is_sent_again_after_a_doubling_backoff() -> None:
    send, sent = _failing(
        [_error(grpc.StatusCode.RESOURCE_EXHAUSTED), _error(grpc.StatusCode.ABORTED)]
    )

    assert await _when_admitted(send) == "done"
    assert len(sent) == 3
    assert sent[1] - sent[0] >= 0.1
    assert sent[2] - sent[1] >= 0.2


async def test_a_refusal_with_a_hint_waits_what_it_names() -> None:
    hinted = _error(grpc.StatusCode.RESOURCE_EXHAUSTED, ((PUSHBACK_KEY, "50"),))
    send, sent = _failing([hinted])

    assert await _when_admitted(send) == "done"
    assert 0.05 <= sent[1] - sent[0] < 0.1


async def test_other_failures_are_not_sent_again() -> None:
    send, sent = _failing([_error(grpc.StatusCode.INVALID_ARGUMENT)])

    with pytest.raises(aio.AioRpcError):
        await _when_admitted(send)
    assert len(sent) == 1
