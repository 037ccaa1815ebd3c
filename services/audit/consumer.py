"""The audit consumer group: writes every event, of every type, to its tenant's audit log.

It handles ANY_EVENT rather than a list of types, so an event type added later is audited
without a change here; one this build cannot decode (a newer producer's) fails, is
dead-lettered, and is replayed after the upgrade rather than silently skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from opentelemetry import metrics

from nova.events.v1 import events_pb2
from services.audit.repository import AuditEntry, count_event, insert_entry
from services.runtime.db import Database
from services.runtime.events.consumer import ANY_EVENT, Consumer, ConsumerSettings
from services.runtime.events.model import Event, Transport
from services.runtime.events.payloads import payload_fields

GROUP = "audit"


async def record(
    conn: asyncpg.Connection, event: Event, envelope: events_pb2.EventEnvelope
) -> None:
    """Adds the event to its tenant's log and tally, in the consumer's transaction."""
    await count_event(conn, event.tenant_id, event.event_type)
    await insert_entry(
        conn,
        AuditEntry(
            tenant_id=event.tenant_id,
            event_id=event.event_id,
            event_type=event.event_type,
            aggregate_type=event.aggregate_type,
            aggregate_id=event.aggregate_id,
            occurred_at=event.occurred_at,
            summary=payload_fields(envelope),
        ),
    )


def build_consumer(
    transport: Transport,
    db: Database,
    topics: Sequence[str],
    *,
    group: str = GROUP,
    settings: ConsumerSettings | None = None,
    meter: metrics.Meter | None = None,
) -> Consumer:
    """The audit group's consumer on `topics` (every topic of the registry; `group` is for
    tests, which need a group of their own on a shared log)."""
    consumer = Consumer(
        group,
        transport,
        db,
        topics=topics,
        settings=settings if settings is not None else ConsumerSettings(),
        meter=meter,
    )
    consumer.on(ANY_EVENT, record)
    return consumer
