"""tests/bench/cpu.py against real processes: this one, a child it starts, a socket it
listens on and a postmaster.pid it writes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.bench import cpu


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A child process that sleeps, started and waited for by the test."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def _burn(seconds: float) -> None:
    until = time.process_time() + seconds
    while time.process_time() < until:
        pass


def test_a_listener_is_found_by_its_port_and_only_while_it_listens() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        assert cpu.listening(port)() == []  # bound, not yet listening
        listener.listen()
        assert [found.pid for found in cpu.listening(port)()] == [os.getpid()]
    assert cpu.listening(port)() == []


def test_children_are_found_by_name_and_with_their_parent(
    child: subprocess.Popen[bytes],
) -> None:
    python = cpu.children_named(os.getpid(), psutil.Process(child.pid).name())
    assert child.pid in [found.pid for found in python()]
    assert cpu.children_named(os.getpid(), "no-such-process")() == []
    family = {found.pid for found in cpu.with_children(cpu.process(os.getpid()))()}
    assert {os.getpid(), child.pid} <= family


def test_an_embedded_postgres_is_found_by_its_postmaster_pid(
    tmp_path: Path, child: subprocess.Popen[bytes]
) -> None:
    find = cpu.postgres(None, tmp_path)
    assert find is not None
    assert find() == []  # no server started there
    (tmp_path / "postgres").mkdir()
    (tmp_path / "postgres" / "postmaster.pid").write_text(f"{os.getpid()}\n{tmp_path}\n")
    assert {os.getpid(), child.pid} <= {found.pid for found in find()}


def test_only_servers_on_a_loopback_tcp_port_are_found_by_url() -> None:
    assert cpu.loopback_port("postgresql://postgres@127.0.0.1:5433/x", 5432) == 5433
    assert cpu.loopback_port("redis://localhost/12", 6379) == 6379
    assert cpu.loopback_port("http://[::1]:8080/graphql", 80) == 8080
    assert cpu.loopback_port("postgresql://postgres@192.0.2.7/x", 5432) is None
    assert cpu.loopback_port("postgresql:///x?host=/tmp", 5432) is None
    assert cpu.redis("unix:///tmp/redis.sock?db=0", None) is None
    assert cpu.redis(None, None) is None


def test_cpu_used_counts_the_window_and_a_process_started_inside_it() -> None:
    spawned: list[int] = []
    components = [
        cpu.Component("this", cpu.process(os.getpid())),
        cpu.Component("child", lambda: [found for pid in spawned for found in cpu.process(pid)()]),
    ]
    before = cpu.read(components)
    assert before["child"] == {}
    _burn(0.2)
    burn = "import time\nt = time.process_time() + 0.4\nwhile time.process_time() < t: pass\n"
    started = subprocess.Popen([sys.executable, "-c", burn + "time.sleep(30)"])
    spawned.append(started.pid)
    try:
        child = psutil.Process(started.pid)
        while sum(child.cpu_times()[:2]) < 0.35:  # in clock ticks
            time.sleep(0.05)
        used = cpu.used(before, cpu.read(components))
    finally:
        started.kill()
        started.wait()
    assert 0.15 <= used["this"] < 5  # the window's 0.2 s (in clock ticks), not all since start
    assert used["child"] >= 0.35  # all of it: the child was not there before
