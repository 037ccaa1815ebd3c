"""wrk (Debian's package) as the bench's closed-loop load generator: a C program in a
process of its own, so the load costs a fraction of what a Python client would and none of
it is charged to what it measures. feed.lua sends the page's query as rotating demo
users and prints one JSON line of counts and latency percentiles, read here.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("feed.lua")


class WrkError(RuntimeError):
    """wrk is missing or failed; the message says how to get it or what it printed."""


@dataclass(frozen=True)
class WrkResult:
    concurrency: int
    seconds: float
    good: int
    """200s without GraphQL errors."""
    overloaded: int
    """503s: the gateway's admission refused them (Retry-After; wrk resends at once)."""
    failed: int
    """Every other answer, and socket errors."""
    p50_ms: float
    p90_ms: float
    p99_ms: float
    """Of every answer, 503s included (they take well under a millisecond)."""

    @property
    def good_rate(self) -> float:
        return self.good / self.seconds

    @property
    def overloaded_rate(self) -> float:
        return self.overloaded / self.seconds


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkError("wrk is not installed: `apt-get install wrk` (Debian's package)")
    return found


def parse(concurrency: int, output: str) -> WrkResult:
    """The result from wrk's output: its last line is feed.lua's JSON."""
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if not lines:
        raise WrkError(f"wrk printed no result:\n{output[-2000:]}")
    counts = json.loads(lines[-1])
    seconds = counts["duration_us"] / 1e6
    if seconds <= 0:
        raise WrkError(f"wrk ran for no time: {lines[-1]}")
    return WrkResult(
        concurrency=concurrency,
        seconds=seconds,
        good=counts["good"],
        overloaded=counts["overloaded"],
        failed=counts["failed"] + counts["socket_errors"],
        p50_ms=counts["p50_us"] / 1000,
        p90_ms=counts["p90_us"] / 1000,
        p99_ms=counts["p99_us"] / 1000,
    )


async def closed_loop(
    url: str, *, body: Path, tokens: Path, concurrency: int, seconds: float
) -> WrkResult:
    """`concurrency` connections, each sending as soon as its answer came, for `seconds`."""
    threads = min(2, concurrency)
    process = await asyncio.create_subprocess_exec(
        wrk_binary(),
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        url,
        env={"BODY_FILE": str(body), "TOKENS_FILE": str(tokens)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise WrkError(f"wrk exited with code {process.returncode}: {err.decode()[-2000:]}")
    return parse(concurrency, out.decode())
