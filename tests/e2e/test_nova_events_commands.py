"""`nova events …` as people run it: the audit log, dead letters and their replay, rewinding
a group, and clear errors for bad input, against a database of its own; and
`./dev bench events` end to end, briefly (the real run is minutes long)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from nova.events.v1 import events_pb2
from services.audit.consumer import record
from services.registry import REGISTRY
from services.runtime.db import open_database
from services.runtime.events.dead_letters import record_dead_letter
from services.runtime.events.envelope import new_event
from services.runtime.events.model import Delivery
from services.runtime.process import migrate_services
from tests.bench import events as events_bench
from tests.conftest import fresh_database

NOVA = str(Path(sys.executable).parent / "nova")
TENANT = uuid.uuid4()


@pytest.fixture(scope="module")
async def events_database(server_url: str) -> AsyncIterator[str]:
    """A database with one audited event and one dead letter, for group "audit"."""
    async with fresh_database(server_url, "nova_events_cli") as url:
        await _populate(url)
        yield url


async def _populate(url: str) -> None:
    async with open_database(url, size=2, acquire_timeout_ms=5000) as db:
        await migrate_services(db, REGISTRY.services.values(), REGISTRY.consumers.values())
        post = uuid.uuid4()
        audited = new_event(
            tenant_id=TENANT,
            aggregate_type="post",
            aggregate_id=post,
            payload=events_pb2.PostCreated(post_id=str(post), author_id="author-1"),
        )
        poison = new_event(
            tenant_id=TENANT,
            aggregate_type="post",
            aggregate_id=post,
            payload=events_pb2.PostLiked(post_id=str(post), user_id="liker-1"),
        )
        async with db.transaction() as conn:
            await record(conn, audited, audited.decode())
            await record_dead_letter(
                conn,
                group="audit",
                delivery=Delivery(poison, poison.topic, 0, 1),
                error="RuntimeError: the handler had a bug",
                attempts=5,
            )


def _nova(*args: str, database: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    env |= {"NOVA_DATABASE_URL": database, "NOVA_LOG_LEVEL": "WARNING", "COLUMNS": "200"}
    return subprocess.run([NOVA, *args], env=env, capture_output=True, text=True, timeout=120)


def test_audit_lists_a_tenants_events_with_their_summary(events_database: str) -> None:
    shown = _nova("events", "audit", "--tenant", str(TENANT), database=events_database)
    assert shown.returncode == 0, shown.stderr
    assert "PostCreated" in shown.stdout
    assert "author_id=author-1" in shown.stdout
    other = _nova("events", "audit", "--tenant", str(uuid.uuid4()), database=events_database)
    assert "PostCreated" not in other.stdout


def test_audit_refuses_a_bad_cursor_with_what_to_pass(events_database: str) -> None:
    refused = _nova("events", "audit", "--after", "nonsense", database=events_database)
    assert refused.returncode == 2
    assert "is not an audit page token" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_dead_letters_are_listed_then_replayed_once_by_their_group(
    events_database: str,
) -> None:
    listed = _nova("events", "dlq", database=events_database)
    assert listed.returncode == 0, listed.stderr
    assert "PostLiked" in listed.stdout
    assert "RuntimeError: the handler had a bug" in listed.stdout
    unknown = _nova("events", "dlq", "replay", "987654", database=events_database)
    assert unknown.returncode == 1
    assert "no dead letter with id 987654" in unknown.stderr

    # No consumer of the group runs yet: the request waits for one, and says so.
    waiting = _nova(
        "events", "dlq", "replay", "--group", "audit", "--wait", "0.5", database=events_database
    )
    assert waiting.returncode == 0, waiting.stderr
    assert "asked for the replay of 1 dead letter(s)" in waiting.stdout
    assert "still waiting after 0.5 s; is a consumer of group 'audit' running" in waiting.stdout
    assert "replay asked" in _nova("events", "dlq", database=events_database).stdout

    consumer = _nova_running("events", "consume", "--group", "audit", database=events_database)
    try:
        replayed = _nova("events", "dlq", "replay", "--group", "audit", database=events_database)
    finally:
        consumer.terminate()
        consumer.wait(30)
    assert replayed.returncode == 0, replayed.stderr
    assert ": applied (PostLiked " in replayed.stdout
    assert "no dead letters" in _nova("events", "dlq", database=events_database).stdout
    audited = _nova("events", "audit", "--tenant", str(TENANT), database=events_database)
    assert "PostLiked" in audited.stdout, "the audit group applied the replayed event"
    assert asyncio.run(_log_event_types(events_database)) == [], "a replay publishes nothing"
    again = _nova("events", "dlq", "replay", "--group", "audit", database=events_database)
    assert "no open dead letters to replay for group 'audit'" in again.stdout


def test_a_dead_letter_is_discarded_once(events_database: str) -> None:
    [letter_id] = asyncio.run(_dead_letter(events_database, "discard-test"))
    discarded = _nova("events", "dlq", "discard", str(letter_id), database=events_database)
    assert discarded.returncode == 0, discarded.stderr
    assert "discarded 1 dead letter(s); 0 parked event(s) behind them" in discarded.stdout
    shown = _nova("events", "dlq", "--all", "--group", "discard-test", database=events_database)
    assert "discarded" in shown.stdout
    twice = _nova("events", "dlq", "discard", str(letter_id), database=events_database)
    assert twice.returncode == 1
    assert f"dead letter {letter_id} (discarded at" in twice.stderr
    assert "is closed and cannot be discarded" in twice.stderr
    both = _nova("events", "dlq", "discard", "1", "--group", "x", database=events_database)
    assert both.returncode == 2
    assert "give dead-letter ids, or --group" in both.stderr


async def _dead_letter(url: str, group: str) -> list[int]:
    post = uuid.uuid4()
    event = new_event(
        tenant_id=TENANT,
        aggregate_type="post",
        aggregate_id=post,
        payload=events_pb2.PostLiked(post_id=str(post), user_id="liker-2"),
    )
    async with open_database(url, size=1, acquire_timeout_ms=5000) as db, db.connection() as conn:
        letter_id = await record_dead_letter(
            conn,
            group=group,
            delivery=Delivery(event, event.topic, 0, 7),
            error="RuntimeError: gone for good",
            attempts=5,
        )
    return [letter_id]


def _nova_running(*args: str, database: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    env |= {"NOVA_DATABASE_URL": database, "NOVA_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [NOVA, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
    )


async def _log_event_types(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT event_type FROM nova_events.log ORDER BY seq")
    finally:
        await conn.close()
    return [row["event_type"] for row in rows]


def test_replay_moves_a_group_back_and_refuses_a_bad_time(events_database: str) -> None:
    past_horizon = _nova(
        "events", "replay", "--group", "audit", "--from", "beginning", database=events_database
    )
    assert past_horizon.returncode == 1
    assert "group 'audit' remembers the events it processed for 168 h" in past_horizon.stderr
    assert "could apply older events a second time" in past_horizon.stderr
    moved = _nova(
        "events",
        "replay",
        "--group",
        "audit",
        "--from",
        "beginning",
        "--allow-repeats",
        database=events_database,
    )
    assert moved.returncode == 0, moved.stderr
    assert "will re-read postgres from the beginning" in moved.stdout
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    recent = _nova(
        "events", "replay", "--group", "audit", "--from", hour_ago, database=events_database
    )
    assert recent.returncode == 0, recent.stderr
    refused = _nova(
        "events", "replay", "--group", "audit", "--from", "yesterday", database=events_database
    )
    assert refused.returncode == 2
    assert "neither an ISO 8601 time" in refused.stderr


def test_bench_events_prints_both_transports_side_by_side(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOVA_DATABASE_URL", database_url)
    options = ["--events", "200", "--rate", "50", "--duration", "1"]
    result = CliRunner().invoke(events_bench.command, options)
    assert result.exit_code == 0, result.output
    for shown in ("postgres", "kafka", "drain: events/s to effect", "lag p99 ms"):
        assert shown in result.output


def test_an_unreachable_kafka_is_named_not_a_traceback(events_database: str) -> None:
    env_db = events_database
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    env |= {"NOVA_DATABASE_URL": env_db, "NOVA_KAFKA_BOOTSTRAP": "127.0.0.1:9"}
    result = subprocess.run(
        [NOVA, "events", "replay", "--group", "audit", "--from", "beginning", "--allow-repeats"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "NOVA_KAFKA_BOOTSTRAP" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_malformed_kafka_address_stops_the_command_with_its_name() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    env["NOVA_KAFKA_BOOTSTRAP"] = "kafka-without-port"
    result = subprocess.run([NOVA, "relay"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "NOVA_KAFKA_BOOTSTRAP must be host:port" in result.stderr
