"""`nova up --processes --workers 2` and `nova serve gateway --workers 2`: every service,
the event workers and two gateway workers in processes of their own, supervised.

One layout serves the module, against the test database and Redis; the tests run in file
order and the last one stops it.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from services.registry import REGISTRY
from tests.conftest import fresh_database

pytestmark = pytest.mark.e2e

NOVA = str(Path(sys.executable).parent / "nova")
READY_TIMEOUT_S = 120.0
SECRET = "processes-test-secret-0123456789abcdef"


@dataclass
class Output:
    """A process's stdout, read by a thread as it comes."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _grown: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def close(self) -> None:
        """Kills the process if it still runs, and closes its output once read."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._grown:
                self.lines.append(line.rstrip("\n"))
                self._grown.notify_all()

    def wait_for(self, pattern: str, *, after: int = 0, timeout: float = READY_TIMEOUT_S) -> str:
        """The first line from index `after` on that matches `pattern`."""
        deadline = time.monotonic() + timeout
        with self._grown:
            while True:
                for line in self.lines[after:]:
                    if re.search(pattern, line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._grown.wait(0.5)):
                    pytest.fail(f"no line matching {pattern!r}:\n" + "\n".join(self.lines))
                self._grown.wait(min(left, 0.5))


@dataclass
class Layout:
    output: Output
    url: str
    pids: dict[str, int]
    """Child name -> pid, as the banner names them."""
    metrics: dict[str, str]
    """Child name -> its metrics URL."""
    env: dict[str, str]


def _start(args: list[str], env: dict[str, str]) -> Output:
    process = subprocess.Popen(
        [NOVA, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    return Output(process)


def _parse(output: Output) -> tuple[str, dict[str, int], dict[str, str]]:
    output.wait_for(r"^nova: ready \(Ctrl-C to stop\)$")
    text = "\n".join(output.lines)
    url_match = re.search(r"^nova: gateway\s.*(http://\S+/graphql)$", text, re.M)
    assert url_match, text
    processes = re.search(r"^nova: processes: (.*)$", text, re.M)
    assert processes, text
    pids = {name: int(pid) for name, pid in re.findall(r"([\w.]+) \(pid (\d+)\)", processes[1])}
    metrics = dict(re.findall(r"^nova: metrics of ([\w.]+): (\S+)$", text, re.M))
    return url_match[1].replace("localhost", "127.0.0.1"), pids, metrics


@pytest.fixture(scope="module")
async def database(server_url: str) -> AsyncIterator[str]:
    async with fresh_database(server_url, "nova_processes") as url:
        yield url


@pytest.fixture(scope="module")
def layout(
    database: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Layout]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    env.update(
        NOVA_DATABASE_URL=database,
        NOVA_REDIS_URL=redis_url,
        NOVA_DATA_DIR=str(tmp_path_factory.mktemp("nova-processes")),
        NOVA_BIND_HOST="127.0.0.1",
        NOVA_GATEWAY_PORT="0",
        NOVA_METRICS_PORT="0",
        **{f"NOVA_{name.upper()}_PORT": "0" for name in REGISTRY.services},
    )
    output = _start(["up", "--processes", "--workers", "2"], env)
    try:
        url, pids, metrics = _parse(output)
        yield Layout(output, url, pids, metrics, env)
    finally:
        output.close()


def _graphql(url: str, query: str, token: str | None = None) -> dict[str, object]:
    headers = {"content-type": "application/json", "connection": "close"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url, data=json.dumps({"query": query}).encode(), headers=headers
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, object] = json.load(response)
    return answer


def _attempts(metrics_url: str) -> float:
    """RPC attempts the gateway worker behind `metrics_url` made, of every method."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("nova_client_attempts_total{")
    )


LOOKUP = '{ user(handle: "nobody_here") { handle } }'


def test_every_part_runs_in_a_process_of_its_own(layout: Layout) -> None:
    expected = {*REGISTRY.services, "relay", "events", "gateway.1", "gateway.2"}
    assert set(layout.pids) == expected
    assert len(set(layout.pids.values())) == len(expected)
    for name, pid in layout.pids.items():
        child = psutil.Process(pid)
        assert child.ppid() == layout.output.process.pid, name
        # A session of its own: a Ctrl-C in the terminal reaches only the supervisor.
        assert os.getsid(pid) == pid, name
    assert set(layout.metrics) == expected


def test_the_gateway_workers_share_its_port(layout: Layout) -> None:
    """New connections are spread over both workers (SO_REUSEPORT): 40 of them all landing
    on one worker would happen by chance once in 2**39 runs."""
    for _ in range(40):
        assert _graphql(layout.url, LOOKUP)["data"] == {"user": None}
    counts = [_attempts(layout.metrics[f"gateway.{i}"]) for i in (1, 2)]
    assert all(count > 0 for count in counts), counts


def test_a_gateway_worker_that_dies_is_restarted_while_the_other_serves(layout: Layout) -> None:
    seen = len(layout.output.lines)
    os.kill(layout.pids["gateway.1"], signal.SIGKILL)
    layout.output.wait_for(r"gateway\.1 \(pid \d+\) exited with code -9; restarting", after=seen)
    # Meanwhile every request is answered, by the worker that is left.
    for _ in range(10):
        assert _graphql(layout.url, LOOKUP)["data"] == {"user": None}
    back = layout.output.wait_for(r"gateway\.1 is back \(pid (\d+)\)", after=seen)
    new_pid = int(re.findall(r"pid (\d+)", back)[0])
    assert new_pid != layout.pids["gateway.1"]
    layout.pids["gateway.1"] = new_pid


def test_a_service_that_dies_comes_back_where_the_gateway_calls_it(layout: Layout) -> None:
    signed_up = _graphql(
        layout.url,
        'mutation { signUp(input: {handle: "ada", email: "ada@example.com", '
        'password: "analytical1843"}) { token } }',
    )
    token = signed_up["data"]["signUp"]["token"]  # type: ignore[index]
    seen = len(layout.output.lines)
    os.kill(layout.pids["content"], signal.SIGKILL)
    layout.output.wait_for(r"content is back \(pid \d+\)", after=seen)
    created = _graphql(layout.url, 'mutation { createPost(text: "back again") { text } }', token)
    assert created["data"] == {"createPost": {"text": "back again"}}, created


def test_serve_gateway_with_workers_beside_the_services(layout: Layout) -> None:
    text = "\n".join(layout.output.lines)
    env = dict(layout.env, NOVA_AUTH_SECRET=SECRET)
    for name in REGISTRY.services:
        address = re.search(rf"^nova: {name}\s+\S+\s+(\S+)$", text, re.M)
        assert address, text
        env[f"NOVA_{name.upper()}_ADDRESS"] = address[1]
    output = _start(["serve", "gateway", "--workers", "2"], env)
    try:
        url, pids, _ = _parse(output)
        assert set(pids) == {"gateway.1", "gateway.2"}
        assert _graphql(url, LOOKUP)["data"] == {"user": None}
        output.process.send_signal(signal.SIGTERM)
        assert output.process.wait(timeout=30) == 0
        assert not any(psutil.pid_exists(pid) for pid in pids.values())
    finally:
        output.close()


def test_sigterm_stops_every_process_gateway_first(layout: Layout) -> None:
    seen = len(layout.output.lines)
    layout.output.process.send_signal(signal.SIGTERM)
    assert layout.output.process.wait(timeout=60) == 0
    stopped = [
        line for line in layout.output.lines[seen:] if "draining" in line or "stopping" in line
    ]
    order = [re.sub(r"^nova: \[([\w.]+)\].*", r"\1", line) for line in stopped]
    order = [name for name in order if not name.startswith("nova")]
    assert order.index("gateway.1") < order.index("relay") < order.index("user"), order
    time.sleep(0.5)
    assert not any(psutil.pid_exists(pid) for pid in layout.pids.values())


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["serve", "user", "--workers", "2"], {}, "--workers applies to the gateway only"),
        (["up", "--workers", "2"], {}, "--workers needs --processes"),
        (["serve", "gateway", "--workers", "65"], {}, "65 is not in the range 1<=x<=64"),
        (
            ["serve", "gateway"],
            {"NOVA_GATEWAY_WORKERS": "0"},
            "NOVA_GATEWAY_WORKERS must be a whole number from 1 to 64; got '0'",
        ),
    ],
)
def test_bad_worker_counts_are_refused_with_a_reason(
    args: list[str], env: dict[str, str], message: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    result = subprocess.run(
        [NOVA, *args], env=clean | env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
