"""The per-RPC duration histogram: Prometheus bucket semantics (a value on a bound counts in
that bucket), cumulative buckets, count and sum, one series per label values."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from interceptors.server.duration_histogram import DurationHistogram


def samples(registry: CollectorRegistry) -> dict[str, float]:
    lines = generate_latest(registry).decode().splitlines()
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in lines)
        if not name.startswith("#") and "_created" not in name
    }


def test_it_exposes_what_prometheus_clients_histogram_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    histogram = DurationHistogram("call_seconds", "Calls.", ["method"], [0.001, 0.01, 0.1, 1])
    ours.register(histogram)
    reference = Histogram(
        "call_seconds", "Calls.", ["method"], buckets=[0.001, 0.01, 0.1, 1], registry=theirs
    )
    for method, seconds in [
        ("a", 0.0005),
        ("a", 0.001),  # on a bound: counted in that bucket (le)
        ("a", 0.05),
        ("a", 3.0),  # past every bound: +Inf only
        ("b", 0.01),
    ]:
        histogram.labels(method).observe(seconds)
        reference.labels(method).observe(seconds)
    assert samples(ours) == pytest.approx(samples(theirs))
    assert samples(ours)['call_seconds_bucket{le="0.001",method="a"}'] == 2
    assert samples(ours)['call_seconds_count{method="a"}'] == 4
    assert samples(ours)['call_seconds_bucket{le="+Inf",method="b"}'] == 1


def test_a_series_is_kept_per_label_values_and_wrong_labels_are_refused() -> None:
    histogram = DurationHistogram("x_seconds", "X.", ["method", "code"], [0.1])
    assert histogram.labels("a", "OK") is histogram.labels("a", "OK")
    assert histogram.labels("a", "OK") is not histogram.labels("a", "INTERNAL")
    with pytest.raises(ValueError, match="takes labels"):
        histogram.labels("a")
