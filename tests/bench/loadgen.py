"""An open-loop load generator: calls start on a fixed schedule, latency counts from it.

A closed loop (N workers, each waiting for its reply before sending again) slows down
with the server, so the queue a real crowd of clients would build never shows up in the
numbers ("coordinated omission"). Here call i is due at start + i / rate whatever
happened to the calls before it, and its latency runs from that due time, not from when
it actually left; a server, or a client, that falls behind shows it in the tail.

Calls that fall due while `max_outstanding` are still in flight are not started but
counted as errors (`client_overloaded`): queueing them in the client would hide the
overload and grow without bound. Every benchmark (gRPC, the GraphQL gateway,
interceptors) drives this with its own `call`; a failed call raises grpc.aio.AioRpcError
and is counted by status code name.
"""

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from grpc import aio
from hdrh.histogram import HdrHistogram

Call = Callable[[], Awaitable[None]]

CLIENT_OVERLOADED = "client_overloaded"
"""A call fell due while max_outstanding calls were in flight, so it never started."""
CLIENT_TIMEOUT = "client_timeout"
"""A call took longer than Load.timeout and was cancelled."""

_HIGHEST_MICROSECONDS = 3_600_000_000
_SIGNIFICANT_DIGITS = 3


@dataclass(frozen=True)
class Load:
    rate: float
    """Calls started per second, whatever the replies do."""
    duration: float
    """Seconds of calls measured, after the warm-up."""
    warmup: float
    """Seconds of calls made first and not measured: connections, pools, caches fill up."""
    max_outstanding: int
    """Calls in flight at most; calls due beyond it count as client_overloaded."""
    timeout: float = 10.0
    """Seconds one call may take; a hung server must not hang the benchmark."""

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.duration <= 0 or self.warmup < 0 or self.timeout <= 0:
            raise ValueError(f"rate, duration and timeout must be > 0, warmup >= 0: {self}")
        if self.max_outstanding < 1:
            raise ValueError(f"max_outstanding must be at least 1: {self}")
        if self.measured_calls < 1:
            raise ValueError(f"rate x duration must be at least one call: {self}")

    @property
    def warmup_calls(self) -> int:
        return round(self.warmup * self.rate)

    @property
    def measured_calls(self) -> int:
        return round(self.duration * self.rate)


@dataclass(frozen=True)
class LoadResult:
    offered_rate: float
    """Load.rate: what was asked of the server."""
    achieved_rate: float
    """Measured calls that succeeded per second, from the first one's due time until the
    schedule ended or the last one completed, whichever is later."""
    scheduled: int
    """Measured calls that fell due (succeeded + every error)."""
    succeeded: int
    errors: dict[str, int]
    """Failed measured calls by gRPC status code name, client_overloaded, client_timeout."""
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    """Latency percentiles of the successful measured calls; 0 when none succeeded."""


async def generate(call: Call, load: Load) -> LoadResult:
    """Runs `call` at load.rate for warm-up + duration; returns what the measured part saw."""
    return await _Run(call, load).execute()


class _Run:
    """The state of one generate(): what is in flight and what has been recorded."""

    def __init__(self, call: Call, load: Load) -> None:
        self._call = call
        self._load = load
        self._histogram = HdrHistogram(1, _HIGHEST_MICROSECONDS, _SIGNIFICANT_DIGITS)
        self._errors: Counter[str] = Counter()
        self._outstanding = 0
        self._succeeded = 0
        self._last_done = 0.0

    async def execute(self) -> LoadResult:
        load = self._load
        interval = 1 / load.rate
        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for index in range(load.warmup_calls + load.measured_calls):
                due = start + index * interval
                # Sleeping zero still yields, so started calls progress even when the
                # schedule is behind and every iteration is already due.
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                measured = index >= load.warmup_calls
                if self._outstanding >= load.max_outstanding:
                    if measured:
                        self._errors[CLIENT_OVERLOADED] += 1
                    continue
                self._outstanding += 1
                group.create_task(self._one(due, measured))
        measure_start = start + load.warmup_calls * interval
        schedule_end = measure_start + load.measured_calls * interval
        elapsed = max(schedule_end, self._last_done) - measure_start
        percentile = self._histogram.get_value_at_percentile
        return LoadResult(
            offered_rate=load.rate,
            achieved_rate=self._succeeded / elapsed,
            scheduled=load.measured_calls,
            succeeded=self._succeeded,
            errors=dict(sorted(self._errors.items())),
            p50_ms=percentile(50) / 1000,
            p90_ms=percentile(90) / 1000,
            p99_ms=percentile(99) / 1000,
            p999_ms=percentile(99.9) / 1000,
        )

    async def _one(self, due: float, measured: bool) -> None:
        failure: str | None = None
        try:
            async with asyncio.timeout(self._load.timeout):
                await self._call()
        except aio.AioRpcError as error:
            failure = error.code().name
        except TimeoutError:
            failure = CLIENT_TIMEOUT
        finally:
            self._outstanding -= 1
        done = time.perf_counter()
        if not measured:
            return
        self._last_done = max(self._last_done, done)
        if failure is not None:
            self._errors[failure] += 1
            return
        self._succeeded += 1
        microseconds = round((done - due) * 1_000_000)
        self._histogram.record_value(min(max(microseconds, 1), _HIGHEST_MICROSECONDS))
