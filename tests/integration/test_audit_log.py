"""The audit log against real PostgreSQL and the PostgreSQL log: each tenant's events land
in its own history with their payloads, once each; listing filters by aggregate and event
type and pages newest first without gaps or repeats, ties included."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message

from nova.events.v1 import events_pb2
from services.audit import consumer as audit_consumer
from services.audit.repository import (
    AuditCursor,
    AuditEntry,
    event_counts,
    list_entries,
    list_sql,
)
from services.audit.service import SPEC as AUDIT
from services.registry import REGISTRY
from services.runtime.db import Database
from services.runtime.errors import InvalidArgument
from services.runtime.events.consumer import Consumer, ConsumerSettings
from services.runtime.events.envelope import new_event
from services.runtime.events.model import Event
from services.runtime.events.payloads import payload_fields
from services.runtime.events.pglog import PostgresLog
from services.runtime.process import migrate_services
from services.runtime.spec import Dependencies
from tests.integration.test_client_fakes import Metrics
from tests.integration.test_event_consumers import run_until

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
async def db(deps: Dependencies) -> Database:
    await migrate_services(deps.db, [], [AUDIT])
    return deps.db


def _post_event(tenant: uuid.UUID, post: uuid.UUID, payload: Message, seconds: int) -> Event:
    return new_event(
        tenant_id=tenant,
        aggregate_type="post",
        aggregate_id=post,
        payload=payload,
        occurred_at=T0 + timedelta(seconds=seconds),
    )


async def _consume(db: Database, events_published: int, group: str, metrics: Metrics) -> Consumer:
    consumer = audit_consumer.build_consumer(
        PostgresLog(db),
        db,
        REGISTRY.topics,
        group=group,
        settings=ConsumerSettings(batch_size=50, fetch_timeout_seconds=0.1),
        meter=metrics.meter,
    )
    await run_until(
        consumer, lambda: consumer.stats.processed + consumer.stats.duplicates == events_published
    )
    return consumer


@pytest.fixture(scope="module")
async def history(db: Database) -> dict[str, object]:
    """Two tenants' events, one of them published twice, consumed by an audit group."""
    alice, bob = uuid.uuid4(), uuid.uuid4()
    tenant, other = uuid.uuid4(), uuid.uuid4()
    first, second = uuid.uuid4(), uuid.uuid4()
    comment = uuid.uuid4()
    events = {
        "created": _post_event(
            tenant, first, events_pb2.PostCreated(post_id=str(first), author_id=str(alice)), 0
        ),
        "commented": _post_event(
            tenant,
            first,
            events_pb2.CommentCreated(
                comment_id=str(comment), post_id=str(first), author_id=str(bob)
            ),
            1,
        ),
        "liked": _post_event(
            tenant, first, events_pb2.PostLiked(post_id=str(first), user_id=str(bob)), 2
        ),
        # These two share occurred_at: the event id breaks the tie.
        "second": _post_event(
            tenant, second, events_pb2.PostCreated(post_id=str(second), author_id=str(bob)), 3
        ),
        "deleted": _post_event(
            tenant, first, events_pb2.PostDeleted(post_id=str(first), author_id=str(alice)), 3
        ),
        "other": new_event(
            tenant_id=other,
            aggregate_type="user",
            aggregate_id=alice,
            payload=events_pb2.UserCreated(user_id=str(alice), handle="alice"),
            occurred_at=T0,
        ),
    }
    group = f"audit-test-{uuid.uuid4().hex[:8]}"
    log = PostgresLog(db)
    async with db.connection() as conn:
        since = await conn.fetchval("SELECT clock_timestamp()")
    await log.rewind(group, REGISTRY.topics, since)
    async with log.publisher() as publisher:
        await publisher.publish(list(events.values()))
        await publisher.publish([events["liked"]])  # delivered twice
    metrics = Metrics()
    consumer = await _consume(db, 7, group, metrics)
    return {
        "events": events,
        "tenant": tenant,
        "other": other,
        "first": first,
        "alice": alice,
        "bob": bob,
        "consumer": consumer,
        "metrics": metrics,
    }


def _ids(entries: list[AuditEntry]) -> list[uuid.UUID]:
    return [entry.event_id for entry in entries]


def _newest_first(*events: Event) -> list[uuid.UUID]:
    ordered = sorted(events, key=lambda e: (e.occurred_at, e.event_id), reverse=True)
    return [event.event_id for event in ordered]


async def test_each_tenant_gets_its_own_events_once_with_summaries(
    db: Database, history: dict[str, object]
) -> None:
    events = history["events"]
    assert isinstance(events, dict)
    tenant, other = history["tenant"], history["other"]
    assert isinstance(tenant, uuid.UUID)
    assert isinstance(other, uuid.UUID)

    page = await list_entries(db, tenant)
    ours = [events[name] for name in ("created", "commented", "liked", "second", "deleted")]
    assert _ids(page.entries) == _newest_first(*ours), "every event once, newest first"
    assert page.next_cursor is None
    liked = next(e for e in page.entries if e.event_id == events["liked"].event_id)
    assert (liked.event_type, liked.aggregate_type, liked.aggregate_id) == (
        "PostLiked",
        "post",
        str(history["first"]),
    )
    assert liked.summary == {"post_id": str(history["first"]), "user_id": str(history["bob"])}
    assert liked.occurred_at == T0 + timedelta(seconds=2)
    assert liked.recorded_at is not None

    [theirs] = (await list_entries(db, other)).entries
    assert theirs.event_id == events["other"].event_id
    assert theirs.summary == {"user_id": str(history["alice"]), "handle": "alice"}
    assert theirs.tenant_id == other

    metrics = history["metrics"]
    assert isinstance(metrics, Metrics)
    assert metrics.total("nova.events.processed") == 6
    assert metrics.total("nova.events.duplicates") == 1


async def test_each_tenant_has_a_tally_by_type_that_counts_a_duplicate_once(
    db: Database, history: dict[str, object]
) -> None:
    tenant, other = history["tenant"], history["other"]
    assert isinstance(tenant, uuid.UUID)
    assert isinstance(other, uuid.UUID)
    counts = await event_counts(db, tenant)
    assert counts == {
        "CommentCreated": 1,
        "PostCreated": 2,
        "PostDeleted": 1,
        "PostLiked": 1,  # published twice, counted once
    }
    assert await event_counts(db, other) == {"UserCreated": 1}


async def test_listing_filters_by_aggregate_and_event_type(
    db: Database, history: dict[str, object]
) -> None:
    events = history["events"]
    tenant, first = history["tenant"], history["first"]
    assert isinstance(events, dict)
    assert isinstance(tenant, uuid.UUID)

    by_post = await list_entries(db, tenant, aggregate_id=str(first))
    assert _ids(by_post.entries) == _newest_first(
        *(events[name] for name in ("created", "commented", "liked", "deleted"))
    )
    created = await list_entries(db, tenant, event_type="PostCreated")
    assert _ids(created.entries) == _newest_first(events["created"], events["second"])
    both = await list_entries(db, tenant, aggregate_id=str(first), event_type="PostCreated")
    assert _ids(both.entries) == [events["created"].event_id]
    assert (await list_entries(db, uuid.uuid4())).entries == []


@pytest.mark.parametrize("size", [1, 2, 3])
async def test_pages_cover_the_history_once_in_order(
    db: Database, history: dict[str, object], size: int
) -> None:
    events = history["events"]
    tenant = history["tenant"]
    assert isinstance(events, dict)
    assert isinstance(tenant, uuid.UUID)
    seen: list[uuid.UUID] = []
    cursor: AuditCursor | None = None
    pages = 0
    while True:
        page = await list_entries(db, tenant, after=cursor, limit=size)
        pages += 1
        assert len(page.entries) <= size
        seen += _ids(page.entries)
        if page.next_cursor is None:
            break
        # As a command line would pass it on.
        cursor = AuditCursor.decode(page.next_cursor.encode())
    ours = [events[name] for name in ("created", "commented", "liked", "second", "deleted")]
    assert seen == _newest_first(*ours)
    assert pages == -(-5 // size)


async def test_bad_tokens_and_limits_are_refused(db: Database) -> None:
    with pytest.raises(InvalidArgument, match="not an audit page token"):
        AuditCursor.decode("nope")
    with pytest.raises(InvalidArgument, match="limit must be between 1 and 1000"):
        await list_entries(db, uuid.uuid4(), limit=0)


async def test_an_unknown_payload_type_is_refused_with_what_to_do() -> None:
    envelope = events_pb2.EventEnvelope(
        payload=any_pb2.Any(type_url="type.googleapis.com/nova.events.v9.Future", value=b"")
    )
    with pytest.raises(LookupError, match=r"nova.events.v9.Future' is unknown to this build"):
        payload_fields(envelope)


@pytest.mark.parametrize(
    ("aggregate", "event_type", "index"),
    [
        (False, False, "audit_log_tenant_time_idx"),
        (True, False, "audit_log_aggregate_idx"),
        (True, True, "audit_log_aggregate_idx"),
    ],
)
async def test_pages_are_read_in_index_order(
    db: Database, aggregate: bool, event_type: bool, index: str
) -> None:
    """Each page is a range scan of its index, in order, without a sort, whatever the
    table's size (sequential scans are disabled so the tiny test table cannot hide it)."""
    sql = list_sql(by_aggregate=aggregate, by_event_type=event_type)
    arguments: list[object] = [uuid.uuid4(), T0, uuid.uuid4(), 10]
    arguments += ["agg"] if aggregate else []
    arguments += ["PostCreated"] if event_type else []
    async with db.transaction() as conn:
        await conn.execute("SET LOCAL enable_seqscan = off")
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {sql}", *arguments))
    assert index in plan
    assert "Sort" not in plan
    conditions = [line for line in plan.splitlines() if "Index Cond" in line]
    assert conditions
    assert "occurred_at" in conditions[0], "the cursor bounds the scan"
