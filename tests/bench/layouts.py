"""`./dev bench layouts`: the home-feed page as users run Nova, against GraphQL Mesh on the
same services, all in one run.

Peers, each started as a user starts it, on free ports and a data folder of the bench's
own (embedded PostgreSQL and Redis unless NOVA_DATABASE_URL / NOVA_REDIS_URL):

- Nova, `nova up --processes --workers W`: each service, the event workers and W gateway
  workers in processes of their own (seeded first: 100 users following 20 each, 5 posts
  with 3 comments and 3 likes each, as `./dev bench feed` seeds).
- GraphQL Mesh (Hive Gateway, `--fork W`, gRPC handler; tests/bench/mesh/README.md says
  how it is configured) pointed at that layout's services: the same data, the same
  database and Redis, the same service processes.
- Nova, `nova up`: every service, the event workers and the gateway in one process, on
  the same data folder.

Per peer: one checked page (20 posts, each with an author), then an open loop at --rate
from this process (httpx; a Python load generator in a process of its own), then closed
loops with wrk (tests/bench/wrk.py) at each --concurrency level after a warm-up, in
--rounds rounds: Nova's processes layout and Mesh run at once and take turns in each
round, so a drift of the machine's speed reaches both (the table adds the rounds up, and
gives the range of the rounds' ratios to Mesh). Every
window counts the CPU each process used (tests/bench/cpu.py), per good page: the gateway
(workers, or Mesh's node processes), each service, the event workers, PostgreSQL, Redis.
503s (the gateway's admission refusing work) are counted apart from good pages; wrk resends
them at once, where a real client would wait for Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click
import httpx
from rich.progress import Progress
from rich.table import Table

from services.cli.seed import Seeded, SeedPlan, seed
from services.registry import REGISTRY
from tests.bench import cpu
from tests.bench.cpu import Component
from tests.bench.feed import FEED_QUERY, RequestFailed, comma_levels
from tests.bench.harness import BenchError, console, run
from tests.bench.loadgen import Load, LoadResult, generate
from tests.bench.mesh_run import MESH_DIR, mesh_command, mesh_env
from tests.bench.mesh_run import query as MESH_QUERY
from tests.bench.wrk import WrkResult, closed_loop, wrk_binary
from tests.brokers import free_port

READY_TIMEOUT_SECONDS = 180.0
STOP_TIMEOUT_SECONDS = 30.0
PAGE_SIZE = 20
PLAN = SeedPlan(
    users=100, posts_per_user=5, follows_per_user=20, comments_per_post=3, likes_per_post=3
)


@dataclass
class Started:
    """A running peer: where its GraphQL endpoint is, and its processes by part."""

    url: str
    parts: dict[str, cpu.Find]
    """CPU components of this peer beyond PostgreSQL and Redis."""
    addresses: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PeerResult:
    name: str
    open_loop: LoadResult
    open_cpu_ms: Mapping[str, float]
    """CPU ms per request in the open loop, by component."""
    levels: Sequence[tuple[WrkResult, Mapping[str, float]]]
    """Each closed loop, its rounds merged (merge_rounds), with CPU ms per good page by
    component."""
    round_rates: Sequence[Sequence[float]] = ()
    """Per level, the good pages/s of each round."""


def _nova_env(data_dir: Path, ports: Mapping[str, int]) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not (key.startswith("NOVA_") and key.endswith("_ADDRESS"))
    }
    env.update(
        NOVA_DATA_DIR=str(data_dir),
        NOVA_BIND_HOST="127.0.0.1",
        **{f"NOVA_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    )
    env.pop("NOVA_METRICS_PORT", None)
    return env


@asynccontextmanager
async def _nova(args: Sequence[str], env: Mapping[str, str], log: Path) -> AsyncIterator[Started]:
    """`nova <args>` until it printed its ready line; its banner says where things are."""
    with log.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            *args,
            env=dict(env),
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,
        )
    assert process.stdout is not None
    banner: list[str] = []
    drain: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            while line := (await process.stdout.readline()).decode():
                banner.append(line.rstrip("\n"))
                if line.startswith("nova: ready"):
                    break
        if not banner or not banner[-1].startswith("nova: ready"):
            raise BenchError(f"`nova {' '.join(args)}` stopped before it was ready; see {log}")
        drain = asyncio.create_task(_drain(process.stdout))
        yield _parse(banner, process.pid)
    finally:
        await _stop_group(process)
        if drain is not None:
            drain.cancel()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


def _parse(banner: Sequence[str], pid: int) -> Started:
    text = "\n".join(banner)
    url = re.search(r"^nova: gateway\s.*(http://\S+/graphql)$", text, re.M)
    if url is None:
        raise BenchError(f"no gateway in the banner:\n{text}")
    addresses = {
        name: address
        for name, address in re.findall(r"^nova: (\w+)\s+nova\.\S+\s+(\S+:\d+)$", text, re.M)
    }
    processes = re.search(r"^nova: processes: (.*)$", text, re.M)
    pids = (
        {name: int(p) for name, p in re.findall(r"([\w.]+) \(pid (\d+)\)", processes[1])}
        if processes
        else {}
    )
    if not pids:
        parts = {"nova up": cpu.process(pid)}
    else:
        parts = {
            "gateway": _pids([p for name, p in pids.items() if name.startswith("gateway.")]),
            **{name: cpu.process(pids[name]) for name in REGISTRY.services},
            "event workers": _pids([pids["relay"], pids["events"], pid]),
        }
    return Started(url=url[1], parts=parts, addresses=addresses, pids=pids | {"nova": pid})


def _pids(pids: Sequence[int]) -> cpu.Find:
    finds = [cpu.process(pid) for pid in pids]
    return lambda: [found for find in finds for found in find()]


async def _stop_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM to the process group (Mesh needs a second one to hurry); then SIGKILL."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


@asynccontextmanager
async def _mesh(addresses: Mapping[str, str], workers: int, log: Path) -> AsyncIterator[Started]:
    if not (MESH_DIR / "node_modules").exists():
        console().print("bench: installing GraphQL Mesh (npm ci in tests/bench/mesh)…")
        installed = await asyncio.create_subprocess_exec(
            "npm",
            "ci",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            cwd=MESH_DIR,
            stdout=subprocess.DEVNULL,
        )
        if await installed.wait() != 0:
            raise BenchError("npm ci failed in tests/bench/mesh")
    port = free_port()
    with log.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            *mesh_command(dict(addresses), port, workers),
            cwd=MESH_DIR,
            env=mesh_env(dict(addresses)),
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/graphql"
    try:
        await _until_answering(url, process, log)
        yield Started(url=url, parts={"Mesh (node)": cpu.with_children(cpu.process(process.pid))})
    finally:
        await _stop_group(process)


async def _until_answering(url: str, process: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    async with httpx.AsyncClient(trust_env=False) as http:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise BenchError(f"Mesh exited with code {process.returncode}; see {log}")
            with contextlib.suppress(httpx.HTTPError):
                response = await http.post(url, json={"query": "{ __typename }"}, timeout=2)
                if response.status_code == 200:
                    return
            await asyncio.sleep(0.5)
    raise BenchError(f"Mesh did not answer within {READY_TIMEOUT_SECONDS:g} s; see {log}")


def _nova_body() -> dict[str, Any]:
    return {"query": FEED_QUERY, "variables": {"first": PAGE_SIZE}}


def _mesh_body() -> dict[str, Any]:
    return {"query": MESH_QUERY, "variables": {"first": PAGE_SIZE}}


def _check_page(name: str, answer: dict[str, Any]) -> None:
    """The page is whole: PAGE_SIZE posts, each with an author (Mesh returns null
    authors when a nested hop's key is not selected)."""
    if answer.get("errors") or "data" not in answer:
        raise BenchError(f"{name}: the feed query failed: {json.dumps(answer)[:500]}")
    data = answer["data"]
    if "homeFeed" in data:
        posts = [edge["node"] for edge in data["homeFeed"]["edges"]]
    else:
        items = data["nova_feed_v1_FeedService_GetHomeFeed"]["items"]
        posts = [item["post"] for item in items]
    if len(posts) != PAGE_SIZE or any(not post.get("author") for post in posts):
        raise BenchError(f"{name}: a page of {len(posts)} posts, or one without its author")


@dataclass
class _Peer:
    """One peer's endpoint, its query, what to count the CPU of, and its rounds so far."""

    name: str
    url: str
    body: dict[str, Any]
    components: Sequence[Component]
    open_loop: LoadResult | None = None
    open_cpu_ms: Mapping[str, float] = field(default_factory=dict)
    rounds: list[list[tuple[WrkResult, Mapping[str, float]]]] = field(default_factory=list)
    """Each round: each level's result and CPU seconds by component."""

    def body_file(self, folder: Path) -> Path:
        path = folder / f"body-{abs(hash(self.name))}.json"
        path.write_text(json.dumps(self.body))
        return path

    def result(self) -> PeerResult:
        assert self.open_loop is not None
        levels = []
        for index in range(len(self.rounds[0])):
            runs = [levels_of_round[index] for levels_of_round in self.rounds]
            merged = merge_rounds([result for result, _ in runs])
            used: dict[str, float] = {}
            for _, seconds in runs:
                for part, value in seconds.items():
                    used[part] = used.get(part, 0.0) + value
            levels.append((merged, _per(used, merged.good)))
        rates = [
            [levels_of_round[index][0].good_rate for levels_of_round in self.rounds]
            for index in range(len(self.rounds[0]))
        ]
        return PeerResult(self.name, self.open_loop, self.open_cpu_ms, levels, rates)


def merge_rounds(results: Sequence[WrkResult]) -> WrkResult:
    """Rounds of one level as one result: counts and seconds added, each percentile the
    median of the rounds' (wrk reports percentiles, not the latencies under them)."""
    return WrkResult(
        concurrency=results[0].concurrency,
        seconds=sum(result.seconds for result in results),
        good=sum(result.good for result in results),
        overloaded=sum(result.overloaded for result in results),
        failed=sum(result.failed for result in results),
        p50_ms=statistics.median(result.p50_ms for result in results),
        p90_ms=statistics.median(result.p90_ms for result in results),
        p99_ms=statistics.median(result.p99_ms for result in results),
    )


async def _open_loop(peer: _Peer, seeded: Seeded, options: LayoutsBench) -> None:
    """Checks the page, then the open loop at --rate from this process (httpx)."""
    viewers = [user.token for user in seeded.users]
    async with httpx.AsyncClient(trust_env=False, timeout=None) as http:
        first = await http.post(
            peer.url, json=peer.body, headers={"authorization": f"Bearer {viewers[0]}"}
        )
        _check_page(peer.name, first.json())
        turn = 0

        async def call() -> None:
            nonlocal turn
            turn += 1
            headers = {"authorization": f"Bearer {viewers[turn % len(viewers)]}"}
            try:
                response = await http.post(peer.url, json=peer.body, headers=headers)
            except httpx.HTTPError as error:
                raise RequestFailed("UNAVAILABLE", str(error)) from None
            if response.status_code != 200 or b'"errors"' in response.content:
                raise RequestFailed("UNKNOWN", f"HTTP {response.status_code}")

        await generate(call, replace(options.load, duration=options.load.warmup, warmup=0))
        before, sent = cpu.read(peer.components), turn
        peer.open_loop = await generate(call, replace(options.load, warmup=0))
        peer.open_cpu_ms = _per(cpu.used(before, cpu.read(peer.components)), turn - sent)


async def _closed_loops(
    peers: Sequence[_Peer], seeded: Seeded, options: LayoutsBench, folder: Path
) -> None:
    """A warm-up each, then --rounds rounds, each running every level for each peer in
    turn: peers measured minutes apart on a shared machine see its speed drift apart (this
    VM's runs of one CPU-bound loop range over 1.6x in a session), rounds taken in turn
    see the same drift."""
    tokens = folder / "tokens.txt"
    tokens.write_text("".join(f"{user.token}\n" for user in seeded.users))
    bodies = {peer.name: peer.body_file(folder) for peer in peers}
    for peer in peers:
        await closed_loop(
            peer.url, body=bodies[peer.name], tokens=tokens, concurrency=8, seconds=options.warmup
        )
    for _ in range(options.rounds):
        for peer in peers:
            levels = []
            for level in options.concurrency:
                before = cpu.read(peer.components)
                result = await closed_loop(
                    peer.url,
                    body=bodies[peer.name],
                    tokens=tokens,
                    concurrency=level,
                    seconds=options.seconds,
                )
                levels.append((result, cpu.used(before, cpu.read(peer.components))))
            peer.rounds.append(levels)


def _per(used: Mapping[str, float], count: int) -> dict[str, float]:
    return {name: seconds * 1000 / max(1, count) for name, seconds in used.items()}


@dataclass(frozen=True)
class LayoutsBench:
    load: Load
    seconds: float
    warmup: float
    concurrency: tuple[int, ...]
    workers: int
    rounds: int = 2
    mesh: bool = True
    single: bool = True


async def bench_layouts(options: LayoutsBench) -> None:
    wrk_binary()  # fails early, saying how to install it
    out = console()
    results: list[PeerResult] = []
    with tempfile.TemporaryDirectory(prefix="nova-bench-layouts-") as name:
        folder = Path(name)
        ports = {name: free_port() for name in REGISTRY.services} | {"gateway": free_port()}
        env = _nova_env(folder / "data", ports)
        log = folder / "nova.log"
        processes = ["up", "--processes", "--workers", str(options.workers)]
        out.print(f"bench: nova {' '.join(processes)}")
        async with _nova(processes, env, log) as layout, contextlib.AsyncExitStack() as stack:
            with Progress(console=out) as progress:
                seeded = await seed(layout.addresses, PLAN, progress=progress)
            shared = _shared(env, folder / "data", layout.pids["nova"])
            parts = [Component(part, find) for part, find in layout.parts.items()]
            await _until_quiet([*parts, *shared])
            peers = [
                _Peer(
                    f"Nova, nova up --processes, {options.workers} gateway workers",
                    layout.url,
                    _nova_body(),
                    [*parts, *shared],
                )
            ]
            if options.mesh:
                out.print(f"bench: GraphQL Mesh, {options.workers} workers, on those services")
                mesh = await stack.enter_async_context(
                    _mesh(layout.addresses, options.workers, folder / "mesh.log")
                )
                mesh_parts = [Component(part, find) for part, find in mesh.parts.items()]
                services = [part for part in parts if part.name != "gateway"]
                peers.append(
                    _Peer(
                        f"GraphQL Mesh, {options.workers} workers",
                        mesh.url,
                        _mesh_body(),
                        [*mesh_parts, *services, *shared],
                    )
                )
            for peer in peers:
                await _open_loop(peer, seeded, options)
            await _closed_loops(peers, seeded, options, folder)
            results += [peer.result() for peer in peers]
        if options.single:
            out.print("bench: nova up (one process)")
            async with _nova(["up"], env, log) as single:
                shared = _shared(env, folder / "data", single.pids["nova"])
                parts = [Component(part, find) for part, find in single.parts.items()]
                await _until_quiet([*parts, *shared])
                alone = _Peer(
                    "Nova, nova up (one process)", single.url, _nova_body(), [*parts, *shared]
                )
                await _open_loop(alone, seeded, options)
                await _closed_loops([alone], seeded, options, folder)
                results.append(alone.result())
    for table in _tables(results, options):
        out.print(table)


def _shared(env: Mapping[str, str], data_dir: Path, nova_pid: int) -> list[Component]:
    postgres = cpu.postgres(env.get("NOVA_DATABASE_URL") or None, data_dir)
    redis = cpu.redis(env.get("NOVA_REDIS_URL") or None, nova_pid)
    found = [("PostgreSQL", postgres), ("Redis", redis)]
    return [Component(name, find) for name, find in found if find is not None]


async def _until_quiet(components: Sequence[Component]) -> None:
    """Until the seed's events are taken in (fan-out, counters): at most 60 s."""
    until = time.monotonic() + 60
    while time.monotonic() < until:
        before = cpu.read(components)
        await asyncio.sleep(1)
        if sum(cpu.used(before, cpu.read(components)).values()) < 0.1:
            return


def _tables(results: Sequence[PeerResult], options: LayoutsBench) -> list[Table]:
    mesh = next((result for result in results if result.name.startswith("GraphQL Mesh")), None)
    names = sorted({name for result in results for _, used in result.levels for name in used})
    open_table = Table(title=f"Open loop at {options.load.rate:g}/s (httpx, its own process)")
    for column in ("peer", "achieved/s", "p50 ms", "p90 ms", "p99 ms", "errors", "CPU ms/page"):
        open_table.add_column(column, justify="left" if column == "peer" else "right")
    for result in results:
        loop = result.open_loop
        open_table.add_row(
            result.name,
            f"{loop.achieved_rate:.1f}",
            f"{loop.p50_ms:.1f}",
            f"{loop.p90_ms:.1f}",
            f"{loop.p99_ms:.1f}",
            str(sum(loop.errors.values())),
            f"{sum(result.open_cpu_ms.values()):.2f}",
        )
    closed = Table(title="Closed loops (wrk; latency of every answer, 503s included)")
    columns = ["peer", "in flight", "good/s", "503/s", "failed", "p50 ms", "p90 ms", "p99 ms"]
    for column in [*columns, *names, "CPU ms/page", "vs Mesh", "rounds vs Mesh"]:
        closed.add_column(column, justify="left" if column == "peer" else "right")
    for result in results:
        for index, (level, used) in enumerate(result.levels):
            versus = spread = "-"
            if mesh is not None and mesh is not result and mesh.levels[index][0].good_rate:
                versus = f"{level.good_rate / mesh.levels[index][0].good_rate:.2f}x"
                ratios = [
                    ours / theirs
                    for ours, theirs in zip(
                        result.round_rates[index], mesh.round_rates[index], strict=False
                    )
                    if theirs
                ]
                if ratios and len(result.round_rates[index]) == len(mesh.round_rates[index]):
                    spread = f"{min(ratios):.2f}-{max(ratios):.2f}x"
            closed.add_row(
                result.name if index == 0 else "",
                str(level.concurrency),
                f"{level.good_rate:.1f}",
                f"{level.overloaded_rate:.1f}",
                str(level.failed),
                f"{level.p50_ms:.1f}",
                f"{level.p90_ms:.1f}",
                f"{level.p99_ms:.1f}",
                *(f"{used[name]:.2f}" if name in used else "-" for name in names),
                f"{sum(used.values()):.2f}",
                versus,
                spread,
            )
    return [open_table, closed]


@click.command(name="layouts")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=50, show_default=True)
@click.option(
    "--duration",
    type=click.FloatRange(min=1),
    default=10,
    show_default=True,
    help="Seconds of each open loop and each closed loop.",
)
@click.option(
    "--warmup",
    type=click.FloatRange(min=1),
    default=3,
    show_default=True,
    help="Seconds of unmeasured load before each peer's open loop and its closed loops.",
)
@click.option("--concurrency", default="1,8,32", show_default=True, callback=comma_levels)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Gateway workers of Nova and of Mesh.",
)
@click.option(
    "--rounds",
    type=click.IntRange(1, 20),
    default=2,
    show_default=True,
    help="Rounds of closed loops, the peers taking turns in each.",
)
@click.option("--no-mesh", is_flag=True, help="Leave GraphQL Mesh out (it needs Node and npm).")
@click.option("--no-single", is_flag=True, help="Leave the one-process `nova up` out.")
def command(
    rate: float,
    duration: float,
    warmup: float,
    concurrency: tuple[int, ...],
    workers: int,
    rounds: int,
    no_mesh: bool,
    no_single: bool,
) -> None:
    """The feed page through `nova up --processes`, GraphQL Mesh on the same services and
    `nova up`: an open loop at --rate, then wrk at each --concurrency level, with the CPU
    of every process per good page."""
    load = Load(rate=rate, duration=duration, warmup=warmup, max_outstanding=200)
    options = LayoutsBench(
        load=load,
        seconds=duration,
        warmup=warmup,
        concurrency=concurrency,
        workers=workers,
        rounds=rounds,
        mesh=not no_mesh,
        single=not no_single,
    )
    run(bench_layouts(options))
