"""The analytics consumer group: every domain event, of every type, staged for ClickHouse.

It handles ANY_EVENT, so a type added later is loaded without a change here. Each event
becomes one row of `events` (its type, who acted, which post), staged in the journal in
the transaction that records the event as processed: a redelivery is a duplicate and
stages nothing, so ClickHouse gets every event exactly once (the batcher's insert tokens
do the rest).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from nova.events.v1 import events_pb2
from services.analytics import journal
from services.analytics.rows import EVENTS, ZERO_ID, EventRow, encode_event
from services.runtime.db import Database
from services.runtime.events.consumer import ANY_EVENT, Consumer, ConsumerSettings
from services.runtime.events.effects import NotRetryable
from services.runtime.events.model import Event, Transport
from services.runtime.events.payloads import payload_fields

GROUP = "analytics"

ACTOR_FIELDS = ("user_id", "follower_id", "author_id")
"""Where a payload names who acted, first found wins (a like's user, a follow's follower,
a post's or a comment's author)."""


def event_row(event: Event, envelope: events_pb2.EventEnvelope) -> EventRow:
    fields = payload_fields(envelope)
    return EventRow(
        tenant_id=event.tenant_id,
        event_id=event.event_id,
        event_type=event.event_type,
        user_id=_id_in(fields, ACTOR_FIELDS),
        post_id=_id_in(fields, ("post_id",)),
        occurred_at=event.occurred_at,
    )


def _id_in(fields: dict[str, object], names: Sequence[str]) -> uuid.UUID:
    for name in names:
        value = fields.get(name)
        if isinstance(value, str) and value:
            try:
                return uuid.UUID(value)
            except ValueError:
                raise NotRetryable(f"{name} {value[:40]!r} is not a UUID") from None
    return ZERO_ID


async def stage_event(
    conn: asyncpg.Connection, event: Event, envelope: events_pb2.EventEnvelope
) -> None:
    await journal.stage(conn, EVENTS.table, 1, encode_event(event_row(event, envelope)))


def build_consumer(
    transport: Transport,
    db: Database,
    topics: Sequence[str],
    *,
    group: str = GROUP,
    settings: ConsumerSettings | None = None,
) -> Consumer:
    """The group's consumer on `topics` (`group` is for tests, which need their own)."""
    consumer = Consumer(
        group,
        transport,
        db,
        topics=topics,
        settings=settings if settings is not None else ConsumerSettings(),
    )
    consumer.on(ANY_EVENT, stage_event)
    return consumer
