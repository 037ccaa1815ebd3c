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


def test_dead_letters_are_listed_then_replayed_once(events_database: str) -> None:
    listed = _nova("events", "dlq", database=events_database)
    assert listed.returncode == 0, listed.stderr
    assert "PostLiked" in listed.stdout
    assert "RuntimeError: the handler had a bug" in listed.stdout
    unknown = _nova("events", "dlq", "replay", "987654", database=events_database)
    assert unknown.returncode == 1
    assert "no dead letter with id 987654" in unknown.stderr
    replayed = _nova("events", "dlq", "replay", "--group", "audit", database=events_database)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1 dead letter(s)" in replayed.stdout
    assert "no dead letters" in _nova("events", "dlq", database=events_database).stdout
    log = asyncio.run(_log_event_types(events_database))
    assert log == ["PostLiked"], "the replay published the event to the log"


async def _log_event_types(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT event_type FROM nova_events.log ORDER BY seq")
    finally:
        await conn.close()
    return [row["event_type"] for row in rows]


def test_replay_moves_a_group_back_and_refuses_a_bad_time(events_database: str) -> None:
    moved = _nova(
        "events", "replay", "--group", "audit", "--from", "beginning", database=events_database
    )
    assert moved.returncode == 0, moved.stderr
    assert "will re-read postgres from the beginning" in moved.stdout
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
        [NOVA, "events", "replay", "--group", "audit", "--from", "beginning"],
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
