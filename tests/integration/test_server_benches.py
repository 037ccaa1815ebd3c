"""`./dev bench overload` and `./dev bench overhead` run end to end, briefly, and print their
side-by-side tables (the real runs are minutes long and belong outside the suite)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tests.bench import overhead, overload


def test_bench_overhead_compares_the_chain_with_no_interceptors() -> None:
    options = ["--rate", "200", "--rounds", "1", "--duration", "0.3", "--warmup", "0"]
    options += ["--saturation-rate", "1000", "--concurrency", "8"]
    result = CliRunner().invoke(overhead.command, options)
    assert result.exit_code == 0, result.output
    for shown in ("no interceptors", "error mapping + auth", "full chain", "throughput ratio"):
        assert shown in result.output


def test_bench_overload_shows_each_mode_side_by_side(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOVA_DATABASE_URL", database_url)
    options = ["--pool", "2", "--cost-ms", "20", "--duration", "0.5", "--warmup", "0"]
    result = CliRunner().invoke(overload.command, options)
    assert result.exit_code == 0, result.output
    for shown in ("backpressure off", "fixed limit 16", "adaptive limit", "refused p99 ms"):
        assert shown in result.output
    assert "RESOURCE_EXHAUSTED" in result.output
