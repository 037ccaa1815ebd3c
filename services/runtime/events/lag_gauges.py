"""Consumer lag as metrics: `nova.events.consumer_lag` (events not yet committed) and
`nova.events.consumer_lag_seconds` (age of the oldest of them), per group and topic.

The gauges read a snapshot that `run` refreshes every 10 s, so a scrape never waits on a
count over the log or a round trip to the brokers, and a transport that fails to answer
leaves the last values in place (and a warning) instead of failing the scrape. It runs
beside the relay and the retention (workers.py), in every process that relays.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence

import structlog
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from services.runtime.events.model import GroupLag, Transport

_log = structlog.get_logger("nova.events")

SAMPLE_EVERY_SECONDS = 10.0


class LagGauges:
    """Samples the lag of the groups in `known` (name -> topics it consumes) and of every
    other group the transport has positions for."""

    def __init__(
        self,
        transport: Transport,
        known: Mapping[str, Sequence[str]],
        *,
        meter: metrics.Meter | None = None,
        every_seconds: float = SAMPLE_EVERY_SECONDS,
    ) -> None:
        self._transport = transport
        self._known = dict(known)
        self._every_seconds = every_seconds
        self.snapshot: dict[str, GroupLag] = {}
        """The last sample, by group."""
        meter = meter if meter is not None else metrics.get_meter("nova.events")
        meter.create_observable_gauge(
            "nova.events.consumer_lag",
            callbacks=[self._observe_events],
            unit="{event}",
            description="Events a consumer group has not committed yet, by group and topic.",
        )
        meter.create_observable_gauge(
            "nova.events.consumer_lag_seconds",
            callbacks=[self._observe_seconds],
            unit="s",
            description="Age of the oldest event a consumer group has not committed "
            "(0 when caught up), by group and topic.",
        )

    async def sample(self) -> None:
        """Reads every group's lag now and replaces the snapshot."""
        names = sorted(set(self._known) | set(await self._transport.groups()))
        self.snapshot = {
            name: await self._transport.lag(name, self._known.get(name, ())) for name in names
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Samples now and every `every_seconds` until `stop` is set."""
        while not stop.is_set():
            try:
                await self.sample()
            except Exception as error:  # the transport's, whatever they are: keep the last
                _log.warning("consumer lag sampling failed", error=repr(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._every_seconds)

    def _observe_events(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(topic.events, {"group": group, "topic": topic.topic})
            for group, lag in self.snapshot.items()
            for topic in lag.topics
        ]

    def _observe_seconds(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(topic.seconds, {"group": group, "topic": topic.topic})
            for group, lag in self.snapshot.items()
            for topic in lag.topics
        ]
