"""The supervisor of `nova up --processes` with real `nova` children: a child that fails
to start, one that is slow to, and one that keeps dying."""

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator

import psutil
import pytest

from services.cli.supervisor import QUICK_DEATHS_TO_GIVE_UP, Child, Supervisor, SupervisorError
from tests.conftest import fresh_database


@pytest.fixture
async def database(server_url: str) -> AsyncIterator[str]:
    async with fresh_database(server_url, "nova_supervisor") as url:
        yield url


class Echoed:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._grown = asyncio.Event()

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self._grown.set()

    async def wait_for(self, pattern: str, after: int) -> str:
        async with asyncio.timeout(60):
            while True:
                for line in self.lines[after:]:
                    if re.search(pattern, line):
                        return line
                self._grown.clear()
                await self._grown.wait()


def _supervisor(echo: Echoed, *, ready_timeout: float = 60) -> Supervisor:
    return Supervisor(ready_timeout_seconds=ready_timeout, stop_timeout_seconds=10, echo=echo)


async def test_a_child_that_exits_before_it_is_ready_fails_the_start() -> None:
    supervisor = _supervisor(Echoed())
    bad_port = Child("user", ("serve", "user"), {"NOVA_USER_PORT": "fifty"})
    with pytest.raises(SupervisorError, match=r"user stopped \(exit code 1\) before it was ready"):
        await supervisor.start([bad_port])
    await supervisor.stop()


async def test_a_child_not_ready_in_time_is_killed(database: str) -> None:
    supervisor = _supervisor(Echoed(), ready_timeout=0.2)
    relay = Child("relay", ("relay",), {"NOVA_DATABASE_URL": database})
    with pytest.raises(
        SupervisorError, match=r"relay \(pid (\d+)\) was not ready after 0.2 s"
    ) as caught:
        await supervisor.start([relay])
    pid = int(re.findall(r"pid (\d+)", str(caught.value))[0])
    assert not psutil.pid_exists(pid)
    await supervisor.stop()


async def test_a_child_that_keeps_dying_is_given_up_on(database: str) -> None:
    echo = Echoed()
    supervisor = _supervisor(echo)
    env = {"NOVA_DATABASE_URL": database, "NOVA_METRICS_PORT": ""}
    try:
        [relay] = await supervisor.start([Child("relay", ("relay",), env)])
        for _ in range(QUICK_DEATHS_TO_GIVE_UP - 1):
            seen = len(echo.lines)
            os.kill(relay.pid, signal.SIGKILL)
            await echo.wait_for(r"relay \(pid \d+\) exited with code -9; restarting it", seen)
            await echo.wait_for(r"relay is back", seen)
        os.kill(relay.pid, signal.SIGKILL)
        async with asyncio.timeout(30):
            reason = await supervisor.failed()
        assert f"exited with code -9, {QUICK_DEATHS_TO_GIVE_UP} times within 10 s" in reason
        assert "gave up restarting it" in reason
    finally:
        await supervisor.stop()
