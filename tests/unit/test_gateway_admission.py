"""The gateway's admission: at most max_in_flight requests run, the next ones wait in
arrival order for at most the queue timeout (and at most max_queued of them), and a
waiter who leaves neither keeps nor loses a turn."""

from __future__ import annotations

import asyncio

import pytest

from gateway.admission import Admission, AdmissionSettings, Refused


async def _hold(admission: Admission, release: asyncio.Event, order: list[int], n: int) -> None:
    async with admission.turn():
        order.append(n)
        await release.wait()


async def test_requests_past_the_limit_wait_their_turn_in_arrival_order() -> None:
    admission = Admission(AdmissionSettings(max_in_flight=2, queue_timeout_seconds=5))
    release, order = asyncio.Event(), list[int]()
    tasks = [asyncio.create_task(_hold(admission, release, order, n)) for n in range(5)]
    await asyncio.sleep(0.01)
    assert (order, admission.in_flight, admission.queued) == ([0, 1], 2, 3)
    release.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert (admission.in_flight, admission.queued, admission.refused) == (0, 0, 0)


async def test_a_request_that_waits_past_the_timeout_is_refused() -> None:
    admission = Admission(AdmissionSettings(max_in_flight=1, queue_timeout_seconds=0.02))
    release = asyncio.Event()
    holder = asyncio.create_task(_hold(admission, release, [], 0))
    await asyncio.sleep(0)
    with pytest.raises(Refused) as refused:
        async with admission.turn():
            pass
    assert (refused.value.in_flight, admission.refused, admission.queued) == (1, 1, 0)
    release.set()
    await holder
    async with admission.turn():  # the turn is free again
        assert admission.in_flight == 1


async def test_a_full_queue_refuses_at_once() -> None:
    admission = Admission(AdmissionSettings(max_in_flight=1, max_queued=1, queue_timeout_seconds=5))
    release = asyncio.Event()
    tasks = [asyncio.create_task(_hold(admission, release, [], n)) for n in range(2)]
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Refused):
        async with admission.turn():
            pass
    assert loop.time() - started < 0.5
    release.set()
    await asyncio.gather(*tasks)


async def test_a_waiter_who_leaves_passes_the_turn_on() -> None:
    admission = Admission(AdmissionSettings(max_in_flight=1, queue_timeout_seconds=5))
    release, order = asyncio.Event(), list[int]()
    holder = asyncio.create_task(_hold(admission, release, order, 0))
    await asyncio.sleep(0)
    leaver = asyncio.create_task(_hold(admission, release, order, 1))
    stayer = asyncio.create_task(_hold(admission, release, order, 2))
    await asyncio.sleep(0.01)
    leaver.cancel()
    release.set()
    await asyncio.gather(holder, stayer)
    assert leaver.cancelled()
    assert order == [0, 2]
    assert (admission.in_flight, admission.queued) == (0, 0)


def test_bad_settings_are_refused() -> None:
    for bad in ({"max_in_flight": 0}, {"max_queued": -1}, {"queue_timeout_seconds": -1}):
        with pytest.raises(ValueError, match="need max_in_flight >= 1"):
            AdmissionSettings(**bad)
