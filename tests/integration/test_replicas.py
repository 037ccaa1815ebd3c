"""Issue 19's scenario, shortened: real `nova serve` processes (the user service twice,
content, feed, analytics, the gateway) on a database of their own, and load from this
process through the gateway while one user replica is SIGKILLed and restarted, then both
are restarted in turn with SIGTERM (tests/bench/replicas.py, `./dev bench replicas`).

A crash gives no warning, so during the kill only reads are held to zero failures (the
gateway retries them on the other replica; a write in flight on the dead one cannot be
retried). A drain does warn (health NOT_SERVING for the drain delay), so during the
rolling restart no call of any kind may fail. Each restarted replica must be sent calls
again: a gateway that never returned to it would pass the rest with one replica.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.bench.replicas import Backing, ReplicasBench, run_replicas
from tests.conftest import fresh_database

OPTIONS = ReplicasBench(
    rate=150,
    warmup=1.5,
    before=1.5,
    down=2.0,
    after=2.5,
    drain_delay=2.0,
    grace=2.0,
    users=20,
)


@pytest.fixture
async def replicas_database(server_url: str) -> AsyncIterator[str]:
    async with fresh_database(server_url, "nova_replicas") as url:
        yield url


async def test_reads_survive_a_kill_and_nothing_fails_in_a_rolling_restart(
    replicas_database: str, redis_url: str, tmp_path: Path
) -> None:
    result = await run_replicas(OPTIONS, Backing(replicas_database, redis_url, tmp_path))
    story = result.describe()
    kill, rolling = result.kill, result.rolling
    for phase in (kill, rolling):
        # The load really ran through the phase (90%: the last calls due may be unsent).
        assert phase.total.calls >= 0.9 * OPTIONS.rate * phase.seconds, story
        assert phase.reads.calls > 0, story
        assert phase.writes.calls > 0, story

    assert kill.reads.failed == 0, story
    assert kill.served_by("B").before > 0, f"B took no calls while A was down\n{story}"
    assert (kill.served_by("A").after or 0) > 0, f"A got no calls after its restart\n{story}"

    assert rolling.total.failed == 0, story
    for replica in ("A", "B"):
        served = rolling.served_by(replica)
        assert (served.after or 0) > 0, f"{replica} got no calls after its restart\n{story}"
