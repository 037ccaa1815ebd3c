"""Child `nova` processes of one command: started group by group, each ready once it prints
`nova: ready`, restarted when one dies, stopped in the reverse order of their groups.

`nova serve gateway --workers N` and `nova up --processes` run on it. Each child is
`python -m services.cli …` in a session of its own, so a Ctrl-C in the terminal reaches only
the supervisor, which then stops them in order (the gateway before the services it calls);
and each child dies with the supervisor (PR_SET_PDEATHSIG) if that is killed outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

READY_LINE = "nova: ready (Ctrl-C to stop)"
"""What `nova up`, `nova serve` and `nova relay`/`events consume` print once serving."""

SUPERVISOR_VARIABLE = "NOVA_SUPERVISOR_PID"
"""Set in a child's environment: the pid it must not outlive."""

QUICK_DEATH_SECONDS = 10.0
"""A child that dies sooner than this after it started counts towards giving up."""
QUICK_DEATHS_TO_GIVE_UP = 5
RESTART_INTERVAL_SECONDS = 1.0
"""At most one restart of a child per interval: a crash loop must not eat the machine."""

_PR_SET_PDEATHSIG = 1


class SupervisorError(Exception):
    """A child could not be started, or kept dying; the message says which and how."""


@dataclass(frozen=True)
class Child:
    name: str
    """As the supervisor's messages call it: "user", "gateway.2"."""
    args: tuple[str, ...]
    """The `nova` command's arguments."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Set over the supervisor's own environment."""


@dataclass
class Started:
    """A child once ready: its pid now, and what it printed before `nova: ready`."""

    child: Child
    process: asyncio.subprocess.Process
    banner: list[str]
    started_at: float
    quick_deaths: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid


def follow_supervisor() -> None:
    """Called first by every `nova` command: a supervised child asks the kernel for SIGTERM
    when its supervisor dies, and leaves at once if that already happened."""
    supervisor = os.environ.get(SUPERVISOR_VARIABLE)
    if not supervisor:
        return
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if str(os.getppid()) != supervisor:
        raise SystemExit("nova: the process that started this one is gone")


class Supervisor:
    """``await sup.start([...])`` per group, ``await sup.failed()`` to learn of a child that
    gave up, ``await sup.stop()`` once (it is safe to call after a failed start)."""

    def __init__(
        self,
        *,
        ready_timeout_seconds: float,
        stop_timeout_seconds: float,
        echo: Callable[[str], None],
    ) -> None:
        self._ready_timeout = ready_timeout_seconds
        self._stop_timeout = stop_timeout_seconds
        self._echo = echo
        self._groups: list[list[Started]] = []
        self._watchers: set[asyncio.Task[None]] = set()
        self._gave_up: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._stopping = False

    async def start(self, children: Sequence[Child]) -> list[Started]:
        """Starts the group at once; returns when every child is ready, in their order."""
        group: list[Started] = []
        self._groups.append(group)
        results = await asyncio.gather(
            *(self._start_one(child) for child in children), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Started):
                group.append(result)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        for started in group:
            watcher = asyncio.create_task(self._watch(started), name=f"watch {started.child.name}")
            self._watchers.add(watcher)
        return group

    async def failed(self) -> str:
        """Returns, with the reason, once a child died too often to go on restarting it."""
        return await asyncio.shield(self._gave_up)

    async def stop(self) -> None:
        """SIGTERM to each group, the last started first; a child still running after the
        stop timeout is killed."""
        self._stopping = True
        for group in reversed(self._groups):
            await asyncio.gather(*(self._stop_one(started) for started in group))
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)

    async def _spawn(self, child: Child) -> asyncio.subprocess.Process:
        env = {
            **os.environ,
            **child.env,
            SUPERVISOR_VARIABLE: str(os.getpid()),
            "PYTHONUNBUFFERED": "1",
        }
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            *child.args,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )

    async def _start_one(self, child: Child) -> Started:
        process = await self._spawn(child)
        started_at = time.monotonic()
        try:
            banner = await asyncio.wait_for(_read_banner(process), self._ready_timeout)
        except TimeoutError:
            await _kill(process)
            raise SupervisorError(
                f"{child.name} (pid {process.pid}) was not ready after "
                f"{self._ready_timeout:g} s; what it logged is above"
            ) from None
        except BaseException:
            await _kill(process)
            raise
        if banner is None:
            code = await process.wait()
            raise SupervisorError(
                f"{child.name} stopped (exit code {code}) before it was ready; "
                "what it logged is above"
            )
        return Started(child=child, process=process, banner=banner, started_at=started_at)

    async def _watch(self, started: Started) -> None:
        """Echoes what the child prints, and restarts it when it dies unasked."""
        while True:
            assert started.process.stdout is not None
            while line := await started.process.stdout.readline():
                text = line.decode(errors="replace").rstrip("\n")
                self._echo(f"nova: [{started.child.name}] {text.removeprefix('nova: ')}")
            code = await started.process.wait()
            if self._stopping:
                return
            lived = time.monotonic() - started.started_at
            started.quick_deaths = started.quick_deaths + 1 if lived < QUICK_DEATH_SECONDS else 1
            name = f"{started.child.name} (pid {started.pid})"
            if started.quick_deaths >= QUICK_DEATHS_TO_GIVE_UP:
                self._give_up(
                    f"{name} exited with code {code}, {started.quick_deaths} times within "
                    f"{QUICK_DEATH_SECONDS:g} s of starting; gave up restarting it"
                )
                return
            self._echo(f"nova: {name} exited with code {code}; restarting it")
            await asyncio.sleep(max(0.0, RESTART_INTERVAL_SECONDS - lived))
            if self._stopping:
                return
            try:
                again = await self._start_one(started.child)
            except SupervisorError as error:
                started.started_at = time.monotonic()
                self._echo(f"nova: {error}")
                if started.quick_deaths + 1 >= QUICK_DEATHS_TO_GIVE_UP:
                    self._give_up(f"{error}; gave up restarting {started.child.name}")
                    return
                started.quick_deaths += 1
                continue
            started.process, started.banner = again.process, again.banner
            started.started_at = again.started_at
            self._echo(f"nova: {started.child.name} is back (pid {started.pid})")
            if self._stopping:
                await self._stop_one(started)
                return

    def _give_up(self, reason: str) -> None:
        if not self._gave_up.done():
            self._gave_up.set_result(reason)

    async def _stop_one(self, started: Started) -> None:
        process = started.process
        if process.returncode is not None:
            return
        try:
            process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(process.wait(), self._stop_timeout)
        except TimeoutError:
            self._echo(
                f"nova: {started.child.name} (pid {started.pid}) did not stop within "
                f"{self._stop_timeout:g} s; killing it"
            )
            await _kill(process)


async def _read_banner(process: asyncio.subprocess.Process) -> list[str] | None:
    """The lines before the ready line; None if the child closed its output first."""
    assert process.stdout is not None
    banner: list[str] = []
    while line := await process.stdout.readline():
        text = line.decode(errors="replace").rstrip("\n")
        if text == READY_LINE:
            return banner
        banner.append(text)
    return None


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
