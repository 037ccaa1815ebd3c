"""`./dev bench replicas`: two replicas of the user service behind one gateway, one of them
killed and then both restarted in turn, under steady load (issue 19).

Each part is a real process, as production runs them: `nova serve user` twice (replicas A
and B, two ports, one database), `nova serve content`, `feed` and `analytics` once each, and
`nova serve gateway` whose NOVA_USER_ADDRESS names both replicas. This process is the load
generator (the open loop of tests/bench/loadgen.py, GraphQL over httpx to the gateway), so
none of the processes measured shares its event loop or its CPU accounting.

- kill -9: replica A is SIGKILLed under load, started again on its port after --down
  seconds, and the load goes on until --after seconds past its SERVING. A crash gives no
  warning, so only the gateway's retries of reads on B stand between it and the callers:
  reads must not fail. A write in flight on A when it died cannot be retried (the gateway
  cannot know whether it ran), so writes are counted here, not held to zero.
- rolling restart: A gets SIGTERM, is started again once it exited and, once it answers
  health SERVING, B the same. A drain announces itself (health NOT_SERVING for
  NOVA_DRAIN_DELAY_SECONDS while the replica still serves, then
  NOVA_SHUTDOWN_GRACE_SECONDS for the calls in flight), so nothing may fail, writes
  included: the gateway has to move away before the replica stops taking calls.

What each replica served is read from its own Prometheus endpoint (NOVA_METRICS_PORT): the
count of rpc_server_call_duration_seconds over UserService's methods (health checks left
out), every SAMPLE_SECONDS. A restarted process counts from zero, so the table shows what
the process before the restart and the one after it answered: the second number is the
proof that the gateway sent the restarted replica traffic again.

PostgreSQL is NOVA_DATABASE_URL's, else an embedded one; Redis NOVA_REDIS_URL's, else an
embedded one; both in a temporary folder of the bench's own, with the processes' logs.
tests/integration/test_replicas.py runs the same scenario (`run_replicas`), shorter.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import os
import random
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click
import httpx
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hdrh.histogram import HdrHistogram
from prometheus_client.parser import text_string_to_metric_families
from rich.table import Table

from services.cli.common import load_config
from services.cli.seed import Seeded, SeedPlan, seed
from services.cli.supervisor import SUPERVISOR_VARIABLE
from services.registry import REGISTRY
from services.runtime.db import open_database
from services.runtime.process import database_url, migrate_services, redis_url
from tests.bench.harness import BenchError, console, error_counts, run
from tests.bench.loadgen import Load, generate
from tests.brokers import free_port

REPOSITORY = Path(__file__).parents[2]
READY_TIMEOUT_SECONDS = 90.0
"""A process starting while the others serve load on 2 cores (and chdb's first start)
takes a few seconds; this is for a machine far slower than that."""
EXIT_MARGIN_SECONDS = 20.0
"""How long past its drain delay and grace a SIGTERMed replica may take to exit."""
SAMPLE_SECONDS = 0.25
"""How often each replica's served count is scraped: the resolution of "traffic back"."""
HTTP_CLIENTS = 8
"""The load's requests take turns over this many httpx clients: httpcore's pool looks at
every connection and queued request whenever one starts or ends, so one pool holding all
the requests in flight costs the square of them, just when a slow spell has many out."""
CALL_TIMEOUT_SECONDS = 15.0
"""Longer than the gateway's own request timeout (10 s), so a slow request is the
gateway's answer, not the load generator giving up."""
CHECKED_FAILURES = 50
"""Failed calls kept with their time, operation, code and message, for the report."""
SLOWEST = 10
"""Successful calls kept with their time and latency: when the tail happened."""
USER_METHODS = f"{REGISTRY.services['user'].full_name}/"
SERVED_METRIC = "rpc_server_call_duration_seconds"
SERVICES = ("content", "feed", "analytics")
"""The gateway's other targets (gateway/clients.py REQUIRED): one process each."""
REPLICAS = ("A", "B")
SECRET_BYTES = 32

NO_ANSWER = (httpx.HTTPError, AttributeError)
"""What an httpx request raises when no answer came. The AttributeError is anyio's on
uvloop when the peer closes a connection as it opens (a process exiting under a scrape):
its socket is gone before httpcore asks for the peer's name."""

READ = "read"
WRITE = "write"
KINDS = (READ, WRITE)
ALL = "all"


# What the scenario is asked to do, and what it found


@dataclass(frozen=True)
class ReplicasBench:
    rate: float = 200.0
    """GraphQL requests a second, through both phases."""
    warmup: float = 3.0
    """Seconds of load before the first phase, not measured: pools and caches fill."""
    before: float = 3.0
    """Seconds of measured load before each phase's first signal."""
    down: float = 3.0
    """Seconds replica A stays dead after its SIGKILL."""
    after: float = 5.0
    """Seconds of load after a phase's last restarted replica answers SERVING."""
    drain_delay: float = 5.0
    """NOVA_DRAIN_DELAY_SECONDS of the user replicas."""
    grace: float = 5.0
    """NOVA_SHUTDOWN_GRACE_SECONDS of the user replicas."""
    users: int = 30
    """Seeded users: the viewers, the users read and the follow pairs written."""
    write_every: int = 5
    """One request in this many is a write (follow or unfollow)."""
    balanced: bool = True
    """The gateway gets both replicas' addresses; False: replica A's only, the baseline
    without client-side balancing."""

    def __post_init__(self) -> None:
        if self.rate <= 0 or min(self.before, self.down, self.after, self.warmup) < 0:
            raise ValueError(f"need rate > 0 and no negative duration: {self}")
        if self.users < 3 or self.write_every < 1:
            raise ValueError(f"need at least 3 users and write_every >= 1: {self}")


@dataclass(frozen=True)
class Backing:
    """What every process shares and the scenario does not start."""

    database_url: str
    redis_url: str
    folder: Path
    """The processes' logs, data folder and chdb path go here."""


@dataclass(frozen=True)
class Calls:
    """The calls of one kind in one phase, latency counted from each call's due time."""

    calls: int
    succeeded: int
    errors: Mapping[str, int]
    """By the GraphQL error's extensions.code, "HTTP <status>" or the httpx error's name."""
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def failed(self) -> int:
        return self.calls - self.succeeded


@dataclass(frozen=True)
class Failure:
    at_seconds: float
    """Since the phase's load began (its due time)."""
    operation: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.at_seconds:7.3f} s  {self.operation}: {self.code}: {self.message}"


@dataclass(frozen=True, order=True)
class Slow:
    ms: float
    at_seconds: float
    """Since the phase's load began (its due time)."""
    operation: str

    def __str__(self) -> str:
        return f"{self.at_seconds:7.3f} s  {self.operation}: {self.ms:.1f} ms"


@dataclass(frozen=True)
class Served:
    """UserService calls one replica answered during one phase, per process."""

    replica: str
    before: int
    """By the process running when the phase began: until it stopped, if it was restarted
    (to its last scrape), else until the phase ended."""
    after: int | None
    """By the process started in its place, until the phase ended; None: not restarted."""
    back_seconds: float | None = None
    """From the restarted process's SERVING to the first scrape that shows it served a call;
    None: not restarted, or no call seen."""


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    """Of measured load."""
    reads: Calls
    writes: Calls
    total: Calls
    served: tuple[Served, ...]
    events: tuple[tuple[float, str], ...]
    """What the scenario did and saw, seconds since the load began."""
    failures: tuple[Failure, ...]
    """The first CHECKED_FAILURES failed calls to end, in the order they were due."""
    slowest: tuple[Slow, ...] = ()
    """The SLOWEST successful calls, in the order they were due."""

    def served_by(self, replica: str) -> Served:
        return next(served for served in self.served if served.replica == replica)

    def describe(self) -> str:
        """The timeline and the first failures, for an assertion message or a log."""
        lines = [f"{self.name}:"]
        lines += [f"  {at:7.3f} s  {what}" for at, what in self.events]
        for kind in (self.reads, self.writes):
            lines.append(f"  {kind.calls} calls, {kind.failed} failed: {error_counts(kind.errors)}")
        lines += [f"  failed {failure}" for failure in self.failures[:20]]
        lines += [f"  slow {slow}" for slow in self.slowest]
        return "\n".join(lines)


@dataclass(frozen=True)
class ReplicasResult:
    kill: Phase
    rolling: Phase
    logs: Path
    """The folder of every process's log (the gateway's: gateway.log)."""

    def describe(self) -> str:
        """Both phases' timelines and first failures, and what the gateway's client logged
        besides the failed calls themselves (a breaker opening, a replica taken out)."""
        log = self.logs / "gateway.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        noted = [line for line in lines if not any(skip in line for skip in _EVERY_FAILURE)]
        return "\n".join(
            [
                self.kill.describe(),
                self.rolling.describe(),
                f"the gateway's log ({log}), without the lines of each failed call:",
                *noted[-30:],
            ]
        )


_EVERY_FAILURE = ('"event":"call failed"', '"event":"an RPC failed')
"""The gateway's log lines of each failed call, which the failures list already shows."""


# The processes


@dataclass
class _Process:
    """A `nova serve …` subprocess that can be killed, stopped and started again."""

    name: str
    args: tuple[str, ...]
    env: Mapping[str, str]
    log: Path
    ready: Callable[[], Awaitable[bool]]
    """One probe of readiness: True once the process serves."""
    process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.cli",
                *self.args,
                cwd=REPOSITORY,
                env={**self.env, SUPERVISOR_VARIABLE: str(os.getpid())},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    async def until_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not await self.ready():
            if self.process is not None and self.process.returncode is not None:
                raise BenchError(
                    f"{self.name} exited with code {self.process.returncode} before it "
                    f"served; {self.tail()}"
                )
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.name} did not serve within {READY_TIMEOUT_SECONDS:g} s; {self.tail()}"
                )
            await asyncio.sleep(0.05)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    async def terminate(self, seconds: float) -> int:
        """SIGTERM, then its exit code once it exited (BenchError after `seconds`)."""
        process = self.process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), seconds)
        except TimeoutError:
            raise BenchError(
                f"{self.name} did not exit within {seconds:g} s of SIGTERM; {self.tail()}"
            ) from None

    async def stop(self, seconds: float) -> None:
        """The end of the run: SIGTERM, SIGKILL if it does not exit within `seconds`."""
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), seconds)
            except TimeoutError:
                process.kill()
        await process.wait()

    def tail(self, lines: int = 25) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"the end of {self.log}:\n" + "\n".join(text.splitlines()[-lines:])


async def _serving(address: str, service: str) -> bool:
    """One grpc health Check of `service` at `address`: what a readiness probe asks."""
    async with aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1.0
            )
        except aio.AioRpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@dataclass
class _Replica:
    name: str
    address: str
    metrics_url: str
    process: _Process
    exit_timeout: float


@dataclass
class _Mesh:
    """Every process of the scenario, and where to reach them."""

    replicas: dict[str, _Replica]
    services: dict[str, _Process]
    gateway: _Process
    addresses: dict[str, str]
    """content, feed and analytics by name."""
    user_target: str
    """NOVA_USER_ADDRESS as the gateway has it: both replicas, comma-separated (A's alone
    with `balanced` False)."""
    url: str
    """The gateway's /graphql."""


def _base_env(backing: Backing, secret: str) -> dict[str, str]:
    """The settings every process shares; none of this environment's NOVA_* (a developer's
    own addresses or ports must not leak into the scenario) nor proxies (the load and
    every probe go to 127.0.0.1)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("NOVA_") and key.lower() not in ("http_proxy", "https_proxy")
    }
    env |= {
        "NOVA_DATABASE_URL": backing.database_url,
        "NOVA_REDIS_URL": backing.redis_url,
        "NOVA_DATA_DIR": str(backing.folder / "data"),
        # chdb is one process per path: the analytics service's own.
        "NOVA_CHDB_PATH": str(backing.folder / "chdb"),
        "NOVA_AUTH_SECRET": secret,
        "NOVA_BIND_HOST": "127.0.0.1",
        # Access lines of every call would cost the 2 cores more than the calls; warnings
        # and the pool's state changes still show.
        "NOVA_LOG_LEVEL": "WARNING",
        # The seed signs up and in every user from one address, far faster than people do;
        # the password hash is not what is measured.
        "NOVA_PASSWORD_HASH_PROFILE": "insecure-fast",
        **{
            f"NOVA_{limit}_{part}": "1000000"
            for limit in ("AUTHENTICATE_LOGIN", "AUTHENTICATE_ADDRESS", "CREATE_USER_ADDRESS")
            for part in ("PER_MINUTE", "BURST")
        },
    }
    return env


@contextlib.asynccontextmanager
async def _running(options: ReplicasBench, backing: Backing) -> AsyncIterator[_Mesh]:
    """Starts the services (both replicas, then content, feed and analytics), then the
    gateway; on exit stops the gateway first, then the services together."""
    logs = backing.folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    base = _base_env(backing, secrets.token_urlsafe(SECRET_BYTES))
    user_spec = REGISTRY.services["user"]
    replicas: dict[str, _Replica] = {}
    for name in REPLICAS:
        port, metrics = free_port(), free_port()
        address = f"127.0.0.1:{port}"
        env = base | {
            "NOVA_USER_PORT": str(port),
            "NOVA_METRICS_PORT": str(metrics),
            "NOVA_DRAIN_DELAY_SECONDS": f"{options.drain_delay:g}",
            "NOVA_SHUTDOWN_GRACE_SECONDS": f"{options.grace:g}",
        }
        replicas[name] = _Replica(
            name,
            address,
            f"http://127.0.0.1:{metrics}/metrics",
            _Process(
                f"user replica {name}",
                ("serve", "user"),
                env,
                logs / f"user-{name}.log",
                _probe(address, user_spec.full_name),
            ),
            exit_timeout=options.drain_delay + options.grace + EXIT_MARGIN_SECONDS,
        )
    addresses = {name: f"127.0.0.1:{free_port()}" for name in SERVICES}
    services = {
        name: _Process(
            name,
            ("serve", name),
            base | {f"NOVA_{name.upper()}_PORT": address.rpartition(":")[2]},
            logs / f"{name}.log",
            _probe(address, REGISTRY.services[name].full_name),
        )
        for name, address in addresses.items()
    }
    gateway_port = free_port()
    user_addresses = [replica.address for replica in replicas.values()]
    user_target = ",".join(user_addresses if options.balanced else user_addresses[:1])
    targets = {
        "NOVA_USER_ADDRESS": user_target,
        **{f"NOVA_{name.upper()}_ADDRESS": address for name, address in addresses.items()},
    }
    gateway = _Process(
        "gateway",
        ("serve", "gateway"),
        # INFO: the client pool's state changes (a replica taken out, back in) are the
        # story of a failed call.
        base | targets | {"NOVA_GATEWAY_PORT": str(gateway_port), "NOVA_LOG_LEVEL": "INFO"},
        logs / "gateway.log",
        _healthz(f"http://127.0.0.1:{gateway_port}/healthz"),
    )
    processes = [replica.process for replica in replicas.values()] + list(services.values())
    try:
        for process in processes:
            await process.start()
        await asyncio.gather(*(process.until_ready() for process in processes))
        await gateway.start()
        await gateway.until_ready()
        yield _Mesh(
            replicas,
            services,
            gateway,
            addresses,
            user_target,
            f"http://127.0.0.1:{gateway_port}/graphql",
        )
    finally:
        await gateway.stop(EXIT_MARGIN_SECONDS)
        await asyncio.gather(
            *(
                process.stop(options.drain_delay + options.grace + EXIT_MARGIN_SECONDS)
                for process in processes
            )
        )


def _probe(address: str, service: str) -> Callable[[], Awaitable[bool]]:
    return lambda: _serving(address, service)


def _healthz(url: str) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        async with httpx.AsyncClient(trust_env=False) as http:
            try:
                return (await http.get(url, timeout=1.0)).status_code == 200
            except NO_ANSWER:
                return False

    return probe


# The load


USER_BY_HANDLE = """query($handle: String!) {
  user(handle: $handle) { id handle displayName followerCount isFollowedByViewer }
}"""
USER_BY_ID = "query($id: ID!) { user(id: $id) { handle followerCount followingCount } }"
VIEWER = "{ viewer { handle email followingCount } }"
PREFERENCES = "{ preferences { language timeZone interests } }"
POST = "query($id: ID!) { post(id: $id) { text author { handle displayName } } }"
FOLLOW = "mutation($id: ID!) { follow(userId: $id) { followerCount isFollowedByViewer } }"
UNFOLLOW = "mutation($id: ID!) { unfollow(userId: $id) { followerCount isFollowedByViewer } }"

READS = (
    ("user(handle)", USER_BY_HANDLE),
    ("user(id)", USER_BY_ID),
    ("user(handle)", USER_BY_HANDLE),
    ("viewer", VIEWER),
    ("post.author", POST),
    ("user(handle)", USER_BY_HANDLE),
    ("user(id)", USER_BY_ID),
    ("preferences", PREFERENCES),
)
"""The reads in turn: each calls the user service (GetUser, BatchGetUsers, GetPreferences;
post.author is BatchGetPosts, then BatchGetUsers)."""


@dataclass(frozen=True)
class _Request:
    operation: str
    kind: str
    body: dict[str, Any]
    token: str


class _Traffic:
    """The requests in turn, from the seeded users: every one signed in (a viewer's token,
    each user's in turn), one in `write_every` a follow or unfollow of a pair of users.

    Each follow pair comes round again only after every other pair did, so no two writes
    of one pair are in flight at once (they would only contend with each other)."""

    def __init__(self, seeded: Seeded, write_every: int) -> None:
        self._users = seeded.users
        self._posts = seeded.post_ids
        self._write_every = write_every
        count = len(self._users)
        pairs = [(a, b) for a in range(count) for b in range(count) if a != b]
        random.Random(19).shuffle(pairs)
        self._pairs = pairs
        self._writes = itertools.count()
        self._reads = itertools.count()

    def request(self, index: int) -> _Request:
        users = self._users
        if index % self._write_every == self._write_every - 1:
            write = next(self._writes)
            follower, followee = self._pairs[write % len(self._pairs)]
            follow = (write // len(self._pairs)) % 2 == 0
            return _Request(
                "follow" if follow else "unfollow",
                WRITE,
                {"query": FOLLOW if follow else UNFOLLOW, "variables": {"id": users[followee].id}},
                users[follower].token,
            )
        read = next(self._reads)
        operation, query = READS[read % len(READS)]
        other = users[(read * 7 + 1) % len(users)]
        variables = {
            USER_BY_HANDLE: {"handle": other.handle},
            USER_BY_ID: {"id": other.id},
            POST: {"id": self._posts[read % len(self._posts)]},
        }.get(query, {})
        return _Request(
            operation,
            READ,
            {"query": query, "variables": variables},
            users[read % len(users)].token,
        )


async def _send(http: httpx.AsyncClient, url: str, request: _Request) -> tuple[str, str] | None:
    """None, or the failure's code and message: a GraphQL error's extensions.code (the
    gateway's answer to a failed RPC), "HTTP <status>" (admission, a dying gateway), or
    the httpx error's name (no answer at all)."""
    try:
        response = await http.post(
            url, json=request.body, headers={"authorization": f"Bearer {request.token}"}
        )
    except NO_ANSWER as error:
        return type(error).__name__, str(error)
    if response.status_code != 200:
        return f"HTTP {response.status_code}", response.text[:300]
    if b'"errors"' not in response.content:
        return None
    errors = response.json().get("errors") or [{}]
    first = errors[0]
    code = str((first.get("extensions") or {}).get("code", "UNKNOWN"))
    return code, f"{first.get('message', '')} (at {first.get('path')})"


_HIGHEST_MICROSECONDS = 3_600_000_000


class _Recorder:
    """Every call of one phase: outcome by kind, latency from its due time, the first
    failures with their time. `open` False: calls due from now on are not sent."""

    def __init__(self, started: float, rate: float) -> None:
        self.started = started
        self.rate = rate
        self.open = True
        self.exhausted = False
        """generate() ran its whole (longest) schedule: the load stopped on its own."""
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.calls: Counter[str] = Counter()
        self.succeeded: Counter[str] = Counter()
        self.errors: dict[str, Counter[str]] = {kind: Counter() for kind in (*KINDS, ALL)}
        self.histograms = {
            kind: HdrHistogram(1, _HIGHEST_MICROSECONDS, 3) for kind in (*KINDS, ALL)
        }
        self.failures: list[Failure] = []
        self.slowest: list[Slow] = []
        """A heap: the fastest of the slowest first."""

    def due(self, index: int) -> float:
        return self.started + index / self.rate

    def record(self, request: _Request, due: float, failure: tuple[str, str] | None) -> None:
        microseconds = round((time.perf_counter() - due) * 1_000_000)
        for kind in (request.kind, ALL):
            self.calls[kind] += 1
            if failure is None:
                self.succeeded[kind] += 1
                value = min(max(microseconds, 1), _HIGHEST_MICROSECONDS)
                self.histograms[kind].record_value(value)
            else:
                self.errors[kind][failure[0]] += 1
        if failure is not None and len(self.failures) < CHECKED_FAILURES:
            self.failures.append(Failure(due - self.started, request.operation, *failure))
        if failure is None:
            slow = Slow(microseconds / 1000, due - self.started, request.operation)
            if len(self.slowest) < SLOWEST:
                heapq.heappush(self.slowest, slow)
            elif slow > self.slowest[0]:
                heapq.heapreplace(self.slowest, slow)

    def result(self, kind: str) -> Calls:
        histogram = self.histograms[kind]
        succeeded = self.succeeded[kind]
        return Calls(
            calls=self.calls[kind],
            succeeded=succeeded,
            errors=dict(sorted(self.errors[kind].items())),
            p50_ms=histogram.get_value_at_percentile(50) / 1000 if succeeded else 0.0,
            p99_ms=histogram.get_value_at_percentile(99) / 1000 if succeeded else 0.0,
            max_ms=histogram.get_max_value() / 1000 if succeeded else 0.0,
        )


class _Load:
    """generate()'s open loop for as long as a phase's script runs. generate() runs for a
    fixed time and a phase as long as its restarts take, so the loop is given the longest a
    phase may last and stopped when the script ends: the recorder closes (calls due after
    that return at once, unsent and uncounted), the calls still out are awaited, and the
    loop is cancelled. Nothing is skipped (max_outstanding exceeds the rate times a call's
    timeout), so the n-th call made is the n-th of the schedule, due at start + n / rate."""

    def __init__(
        self, http: Sequence[httpx.AsyncClient], url: str, traffic: _Traffic, rate: float
    ) -> None:
        self._http = http
        self._url = url
        self._traffic = traffic
        self._rate = rate

    def _load(self, seconds: float) -> Load:
        outstanding = math.ceil(self._rate * CALL_TIMEOUT_SECONDS) + 16
        return Load(
            self._rate, seconds, 0, max_outstanding=outstanding, timeout=CALL_TIMEOUT_SECONDS
        )

    async def _call(self, recorder: _Recorder, indexes: itertools.count[int]) -> None:
        index = next(indexes)
        if not recorder.open:
            return
        due = recorder.due(index)
        request = self._traffic.request(index)
        recorder.in_flight += 1
        try:
            http = self._http[index % len(self._http)]
            failure = await _send(http, self._url, request)
        except asyncio.CancelledError:
            timed_out = ("client_timeout", f"no answer in {CALL_TIMEOUT_SECONDS:g} s")
            recorder.record(request, due, timed_out)
            raise
        finally:
            recorder.in_flight -= 1
            if not recorder.in_flight:
                recorder.idle.set()
        recorder.record(request, due, failure)

    @contextlib.asynccontextmanager
    async def running(self, longest: float) -> AsyncIterator[_Recorder]:
        """Load from now until the block ends (or `longest` seconds, if sooner)."""
        indexes = itertools.count()
        recorder = _Recorder(time.perf_counter(), self._rate)
        task = asyncio.create_task(
            generate(lambda: self._call(recorder, indexes), self._load(longest))
        )
        task.add_done_callback(lambda _: setattr(recorder, "exhausted", True))
        try:
            yield recorder
        finally:
            recorder.open = False
            if recorder.in_flight:
                recorder.idle.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(recorder.idle.wait(), CALL_TIMEOUT_SECONDS + 5)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# What each replica served


def served_calls(exposition: str) -> int:
    """UserService calls a process answered, every status, from its scrape endpoint's text:
    the calls counted by rpc_server_call_duration_seconds (health checks are another
    service's methods)."""
    total = 0.0
    for family in text_string_to_metric_families(exposition):
        if family.name != SERVED_METRIC:
            continue
        for sample in family.samples:
            if sample.name == f"{SERVED_METRIC}_count" and sample.labels.get(
                "rpc_method", ""
            ).startswith(USER_METHODS):
                total += sample.value
    return int(total)


@dataclass
class _Sampler:
    """Each replica's served count, scraped every SAMPLE_SECONDS: (when, pid, count) a
    replica. A sample is kept only if the same process answered it that was running when
    the scrape began (a restarted process counts from zero)."""

    replicas: Mapping[str, _Replica]
    http: httpx.AsyncClient
    samples: dict[str, list[tuple[float, int, int]]] = field(default_factory=dict)

    async def scrape(self, replica: _Replica) -> None:
        process = replica.process
        pid = process.pid
        if pid is None or not process.running:
            return
        try:
            response = await self.http.get(replica.metrics_url, timeout=1.0)
        except NO_ANSWER:
            return
        if response.status_code != 200 or process.pid != pid or not process.running:
            return
        sample = (time.perf_counter(), pid, served_calls(response.text))
        self.samples.setdefault(replica.name, []).append(sample)

    async def round(self) -> None:
        await asyncio.gather(*(self.scrape(replica) for replica in self.replicas.values()))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            await self.round()

    def served(self, name: str, first_pid: int, restarted: Mapping[int, float]) -> Served:
        """`restarted`: the processes started in place of `first_pid`, by pid, each with
        the time it answered SERVING."""
        samples = self.samples.get(name, [])
        old = [count for _, pid, count in samples if pid == first_pid]
        before = old[-1] - old[0] if old else 0
        if not restarted:
            return Served(name, before, None)
        fresh = [(at, pid, count) for at, pid, count in samples if pid in restarted]
        last: dict[int, int] = {}
        for _, pid, count in fresh:
            last[pid] = count
        back = next(
            (at - restarted[pid] for at, pid, count in fresh if count > 0),
            None,
        )
        return Served(name, before, sum(last.values()), back)


# The phases


@dataclass
class _Stage:
    """What a phase's script does to the replicas, each step marked on its timeline."""

    mesh: _Mesh
    sampler: _Sampler
    events: list[tuple[float, str]] = field(default_factory=list)
    restarted: dict[str, dict[int, float]] = field(default_factory=dict)
    """By replica: its processes started in this phase, each with when it served."""

    def mark(self, what: str) -> None:
        self.events.append((time.perf_counter(), what))

    async def kill(self, name: str) -> None:
        replica = self.mesh.replicas[name]
        await self.sampler.scrape(replica)  # what the process answered, to the last moment
        await replica.process.kill()
        self.mark(f"SIGKILL to replica {name}")

    async def drain(self, name: str) -> None:
        replica = self.mesh.replicas[name]
        self.mark(f"SIGTERM to replica {name}")
        code = await replica.process.terminate(replica.exit_timeout)
        self.mark(f"replica {name} exited with code {code}")

    async def restart(self, name: str) -> None:
        replica = self.mesh.replicas[name]
        await replica.process.start()
        self.mark(f"replica {name} started again (pid {replica.process.pid})")
        await replica.process.until_ready()
        self.mark(f"replica {name} answers health SERVING")
        assert replica.process.pid is not None
        self.restarted.setdefault(name, {})[replica.process.pid] = time.perf_counter()


Script = Callable[[_Stage], Awaitable[None]]


async def _phase(
    name: str, mesh: _Mesh, load: _Load, http: httpx.AsyncClient, longest: float, script: Script
) -> Phase:
    sampler = _Sampler(mesh.replicas, http)
    await sampler.round()
    first = {replica.name: replica.process.pid for replica in mesh.replicas.values()}
    stage = _Stage(mesh, sampler)
    scraping = asyncio.create_task(sampler.run())
    try:
        async with load.running(longest) as recorder:
            await script(stage)
            if recorder.exhausted:
                raise BenchError(f"{name}: the load ended before the phase did")
            stage.mark("load stopped")
        await sampler.round()
    finally:
        scraping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scraping
    started = recorder.started
    served = []
    for replica, pid in first.items():
        assert pid is not None
        restarted = stage.restarted.get(replica, {})
        result = sampler.served(replica, pid, restarted)
        served.append(result)
    return Phase(
        name=name,
        seconds=stage.events[-1][0] - started,
        reads=recorder.result(READ),
        writes=recorder.result(WRITE),
        total=recorder.result(ALL),
        served=tuple(served),
        events=tuple((at - started, what) for at, what in stage.events),
        failures=tuple(sorted(recorder.failures, key=lambda failure: failure.at_seconds)),
        slowest=tuple(sorted(recorder.slowest, key=lambda slow: slow.at_seconds)),
    )


def _kill_script(options: ReplicasBench) -> Script:
    async def script(stage: _Stage) -> None:
        await asyncio.sleep(options.before)
        await stage.kill("A")
        await asyncio.sleep(options.down)
        await stage.restart("A")
        await asyncio.sleep(options.after)

    return script


def _rolling_script(options: ReplicasBench) -> Script:
    async def script(stage: _Stage) -> None:
        await asyncio.sleep(options.before)
        for name in REPLICAS:
            await stage.drain(name)
            await stage.restart(name)
        await asyncio.sleep(options.after)

    return script


def seed_plan(users: int) -> SeedPlan:
    return SeedPlan(
        users=users, posts_per_user=2, follows_per_user=5, comments_per_post=0, likes_per_post=0
    )


async def run_replicas(
    options: ReplicasBench, backing: Backing, say: Callable[[str], object] = lambda _: None
) -> ReplicasResult:
    """The scenario: migrations, every process, the seed, a warm-up, then both phases."""
    async with open_database(backing.database_url, size=2, acquire_timeout_ms=10_000) as db:
        await migrate_services(db, REGISTRY.services.values())
    say("replicas: starting user A and B, content, feed, analytics, then the gateway")
    async with _running(options, backing) as mesh:
        # The seed's client balances over the replicas as the gateway's does.
        seeded = await seed(
            {"user": mesh.user_target, "content": mesh.addresses["content"]},
            seed_plan(options.users),
        )
        say(f"replicas: seeded {len(seeded.users)} users; gateway at {mesh.url}")
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
        async with contextlib.AsyncExitStack() as stack:
            http = [
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        trust_env=False, timeout=CALL_TIMEOUT_SECONDS + 5, limits=limits
                    )
                )
                for _ in range(HTTP_CLIENTS)
            ]
            scraper = await stack.enter_async_context(httpx.AsyncClient(trust_env=False))
            load = _Load(http, mesh.url, _Traffic(seeded, options.write_every), options.rate)
            if options.warmup > 0:
                async with load.running(options.warmup + 60) as warm:
                    await asyncio.sleep(options.warmup)
                if warm.failures:
                    raise BenchError(
                        f"{warm.calls[ALL] - warm.succeeded[ALL]} of {warm.calls[ALL]} "
                        f"calls failed before any replica was touched, e.g. {warm.failures[0]}; "
                        f"{mesh.gateway.tail()}"
                    )
            exits = 2 * (options.drain_delay + options.grace + EXIT_MARGIN_SECONDS)
            longest = (
                options.before + options.down + options.after + exits + 2 * READY_TIMEOUT_SECONDS
            )
            say(f"replicas: kill -9 of replica A under {options.rate:g} requests/s")
            kill = await _phase("kill -9", mesh, load, scraper, longest, _kill_script(options))
            say("replicas: rolling restart of A, then B")
            rolling = await _phase(
                "rolling restart", mesh, load, scraper, longest, _rolling_script(options)
            )
    return ReplicasResult(kill, rolling, backing.folder / "logs")


# The tables


def _calls_table(phase: Phase, title: str) -> Table:
    table = Table(title=title, caption_justify="left")
    for column in ("requests", "calls", "succeeded", "errors", "p50 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="left" if column in ("requests", "errors") else "right")
    for label, calls in (("reads", phase.reads), ("writes", phase.writes), ("all", phase.total)):
        table.add_row(
            label,
            f"{calls.calls:,}",
            f"{calls.succeeded:,}",
            error_counts(calls.errors),
            *(
                f"{ms:.1f}" if calls.succeeded else "-"
                for ms in (calls.p50_ms, calls.p99_ms, calls.max_ms)
            ),
        )
    table.caption = "\n".join(f"{at:6.2f} s  {what}" for at, what in phase.events)
    return table


def _served_table(phase: Phase) -> Table:
    table = Table(title=f"{phase.name}: UserService calls each replica answered (its /metrics)")
    for column in (
        "replica",
        "before its restart",
        "after its restart",
        "first call after SERVING",
    ):
        table.add_column(column, justify="left" if column == "replica" else "right")
    for served in phase.served:
        table.add_row(
            served.replica,
            f"{served.before:,}",
            f"{served.after:,}" if served.after is not None else "not restarted",
            f"{served.back_seconds:.2f} s" if served.back_seconds is not None else "-",
        )
    return table


def print_result(result: ReplicasResult, options: ReplicasBench) -> None:
    out = console()
    mix = f"{options.rate:g} requests/s, 1 in {options.write_every} a write"
    titles = {
        "kill -9": f"kill -9 of user replica A, started again after {options.down:g} s ({mix})",
        "rolling restart": (
            f"rolling restart: SIGTERM to A, then B, each started again once it exited "
            f"(drain delay {options.drain_delay:g} s, grace {options.grace:g} s; {mix})"
        ),
    }
    for phase in (result.kill, result.rolling):
        out.print(_calls_table(phase, titles[phase.name]))
        out.print(_served_table(phase))
        for failure in phase.failures[:10]:
            out.print(f"  failed: {failure}")
        out.print(
            "  slowest: "
            + "; ".join(f"{slow.ms:.0f} ms at {slow.at_seconds:.2f} s" for slow in phase.slowest)
        )


async def bench_replicas(options: ReplicasBench) -> None:
    config = load_config()
    out = console()
    with tempfile.TemporaryDirectory(prefix="nova-bench-replicas-") as name:
        folder = Path(name)
        # An embedded PostgreSQL or Redis, when there is none to use, lives with the logs.
        local = replace(config, data_dir=folder / "embedded")
        async with database_url(local) as dsn, redis_url(local) as redis:
            result = await run_replicas(options, Backing(dsn, redis, folder), say=out.print)
    print_result(result, options)


@click.command("replicas")
@click.option("--rate", default=200.0, show_default=True, help="GraphQL requests a second")
@click.option("--warmup", default=3.0, show_default=True, help="seconds of load before measuring")
@click.option(
    "--before", default=3.0, show_default=True, help="seconds of load before each phase's signal"
)
@click.option("--down", default=3.0, show_default=True, help="seconds replica A stays dead")
@click.option(
    "--after",
    default=5.0,
    show_default=True,
    help="seconds of load after a phase's last restarted replica serves",
)
@click.option(
    "--drain-delay",
    default=5.0,
    show_default=True,
    help="the replicas' NOVA_DRAIN_DELAY_SECONDS",
)
@click.option(
    "--grace", default=5.0, show_default=True, help="the replicas' NOVA_SHUTDOWN_GRACE_SECONDS"
)
@click.option("--users", default=30, show_default=True, help="seeded users")
@click.option("--write-every", default=5, show_default=True, help="one request in N is a write")
@click.option(
    "--single-address",
    is_flag=True,
    help="the gateway gets replica A's address only: the baseline without balancing",
)
def command(
    rate: float,
    warmup: float,
    before: float,
    down: float,
    after: float,
    drain_delay: float,
    grace: float,
    users: int,
    write_every: int,
    single_address: bool,
) -> None:
    """Two user replicas behind the gateway under load: one killed with SIGKILL and
    restarted, then both restarted in turn (SIGTERM, drain); failed calls by code, latency,
    and the calls each replica answered before and after its restart."""
    options = ReplicasBench(
        rate=rate,
        warmup=warmup,
        before=before,
        down=down,
        after=after,
        drain_delay=drain_delay,
        grace=grace,
        users=users,
        write_every=write_every,
        balanced=not single_address,
    )
    run(bench_replicas(options))
