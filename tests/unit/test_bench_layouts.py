"""The pieces of `./dev bench layouts` that need no wrk, Node or servers: reading wrk's
result line, reading a `nova up --processes` banner, checking a page, Mesh's command,
merging rounds."""

import os

import pytest

from tests.bench.harness import BenchError
from tests.bench.layouts import PAGE_SIZE, _check_page, _parse, merge_rounds
from tests.bench.mesh_run import mesh_command, mesh_env
from tests.bench.wrk import WrkError, WrkResult, parse

WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:1/graphql
  2 threads and 8 connections
Requests/sec:    102.80
{"good":500,"overloaded":40,"failed":2,"socket_errors":1,"duration_us":5000000,"p50_us":76700,"p90_us":122400,"p99_us":165400}
"""

BANNER = [
    "nova: database: NOVA_DATABASE_URL",
    "nova: user            nova.user.v1.UserService                 127.0.0.1:41001",
    "nova: content         nova.content.v1.ContentService           127.0.0.1:41002",
    "nova: feed            nova.feed.v1.FeedService                 127.0.0.1:41003",
    "nova: analytics       nova.analytics.v1.AnalyticsService       127.0.0.1:41005",
    "nova: tenant          nova.tenant.v1.TenantService             127.0.0.1:41006",
    "nova: gateway         GraphQL (GraphiQL in a browser)          http://127.0.0.1:41004/graphql",
    # Only the first is a live process (this test's); the others are past any pid_max.
    f"nova: processes: user (pid {os.getpid()}), content (pid 9000002), feed (pid 9000003), "
    "analytics (pid 9000008), tenant (pid 9000009), relay (pid 9000004), events (pid 9000005), "
    "gateway.1 (pid 9000006), gateway.2 (pid 9000007)",
    "nova: ready (Ctrl-C to stop)",
]


def test_wrk_result_counts_good_pages_503s_and_failures_apart() -> None:
    result = parse(8, WRK_OUTPUT)
    assert (result.good, result.overloaded, result.failed) == (500, 40, 3)
    assert result.good_rate == 100.0
    assert result.overloaded_rate == 8.0
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (76.7, 122.4, 165.4)


def test_wrk_output_without_a_result_line_is_an_error() -> None:
    with pytest.raises(WrkError, match="wrk printed no result"):
        parse(8, "unable to connect to 127.0.0.1:1 Connection refused\n")


def test_a_processes_banner_gives_the_endpoints_and_each_part() -> None:
    started = _parse(BANNER, pid=99)
    assert started.url == "http://127.0.0.1:41004/graphql"
    assert started.addresses == {
        "user": "127.0.0.1:41001",
        "content": "127.0.0.1:41002",
        "feed": "127.0.0.1:41003",
        "analytics": "127.0.0.1:41005",
        "tenant": "127.0.0.1:41006",
    }
    assert set(started.parts) == {
        "gateway",
        "user",
        "content",
        "feed",
        "analytics",
        "tenant",
        "event workers",
    }
    assert started.pids["gateway.2"] == 9000007
    # Found by pid: this test's own process stands in for the user service.
    assert [found.pid for found in started.parts["user"]()] == [os.getpid()]


def test_a_one_process_banner_is_one_part() -> None:
    single = [line for line in BANNER if not line.startswith("nova: processes")]
    assert set(_parse(single, pid=os.getpid()).parts) == {"nova up"}


def _nova_page(authors: bool = True) -> dict[str, object]:
    node = {"id": "p", "author": {"id": "a"} if authors else None}
    return {"data": {"homeFeed": {"edges": [{"node": node}] * PAGE_SIZE}}}


def test_a_page_must_be_whole() -> None:
    _check_page("nova", _nova_page())
    with pytest.raises(BenchError, match="one without its author"):
        _check_page("nova", _nova_page(authors=False))
    mesh = {
        "data": {"nova_feed_v1_FeedService_GetHomeFeed": {"items": [{"post": {"author": None}}]}}
    }
    with pytest.raises(BenchError, match="a page of 1 posts"):
        _check_page("mesh", mesh)
    with pytest.raises(BenchError, match="the feed query failed"):
        _check_page("mesh", {"errors": [{"message": "no"}]})


def test_mesh_needs_every_service_address() -> None:
    addresses = {"user": "127.0.0.1:1", "content": "127.0.0.1:2", "feed": "127.0.0.1:3"}
    command = mesh_command(addresses, 4471, 2)
    assert command[-4:] == ["--port", "4471", "--fork", "2"]
    assert mesh_env(addresses)["NOVA_FEED_ADDR"] == "127.0.0.1:3"
    with pytest.raises(ValueError, match="Mesh needs the addresses of feed"):
        mesh_command({"user": "a", "content": "b"}, 4471, 2)


def test_rounds_of_a_level_add_up_and_take_the_median_percentiles() -> None:
    rounds = [
        WrkResult(8, 10.0, 1000, 5, 0, 40.0, 60.0, 90.0),
        WrkResult(8, 10.0, 1400, 0, 1, 30.0, 50.0, 70.0),
        WrkResult(8, 10.0, 1200, 1, 0, 35.0, 55.0, 200.0),
    ]
    merged = merge_rounds(rounds)
    assert (merged.seconds, merged.good, merged.overloaded, merged.failed) == (30.0, 3600, 6, 1)
    assert merged.good_rate == 120.0
    assert (merged.p50_ms, merged.p90_ms, merged.p99_ms) == (35.0, 55.0, 90.0)
