"""A latency histogram cheap enough to observe on every RPC, collected by prometheus_client.

prometheus_client's own Histogram.observe checks that it may observe, takes two locks and
walks the buckets in Python: 0.65 µs per call, and several times that inside a busy server
(`./dev bench overhead`), for the one metric every served call records. Here a series finds
its bucket with bisect (in C) and adds to a list of counts and a float. Each series is
meant to be observed from one thread, the event loop's that serves the calls: two threads
adding to one series at once could lose a count. A scrape reads from another thread and
may see a call counted in a bucket before its seconds are in the sum, which
prometheus_client's per-value locks allow as well.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

_INF = float("inf")


def _le(bound: float) -> str:
    """A bucket's bound as Prometheus writes it: "+Inf", "0.005", "1.0"."""
    return "+Inf" if bound == _INF else repr(bound)


class Series:
    """The histogram of one combination of label values."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        """Observations per bucket (not cumulative); the last bucket is +Inf."""
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        # The first bound >= seconds: Prometheus buckets count values less than or equal.
        self.counts[bisect_left(self._bounds, seconds)] += 1
        self.sum += seconds


class DurationHistogram(Collector):
    """A histogram with labels, as prometheus_client's Histogram would expose it."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        bounds = sorted(float(bound) for bound in buckets)
        if bounds[-1] != _INF:
            bounds.append(_INF)
        self._bounds = tuple(bounds)
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], Series] = {}

    def labels(self, *values: str) -> Series:
        """The series of these label values (created at first use; keep it and observe)."""
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}, got {values}")
        series = self._series.get(values)
        if series is None:
            series = self._series.setdefault(values, Series(self._bounds))
        return series

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, series in list(self._series.items()):
            counts, total = list(series.counts), series.sum
            cumulative, buckets = 0, []
            for bound, count in zip(self._bounds, counts, strict=True):
                cumulative += count
                buckets.append((_le(bound), float(cumulative)))
            family.add_metric(list(values), buckets, total)
        yield family
