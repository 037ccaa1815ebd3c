"""Building an event: the envelope around a payload, with the caller's trace context."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from google.protobuf.message import Message
from opentelemetry import propagate

from nova.events.v1 import events_pb2
from services.runtime.events.model import Event
from services.runtime.ids import new_id

_AGGREGATE_TYPE = re.compile(r"[a-z][a-z0-9_]*")
"""What names a topic (nova.<aggregate>.v1); services declare theirs in their SPEC."""


def new_event(
    *,
    tenant_id: uuid.UUID,
    aggregate_type: str,
    aggregate_id: uuid.UUID | str,
    payload: Message,
    occurred_at: datetime | None = None,
) -> Event:
    """An event of `payload` (a nova.events.v1 message) about one aggregate.

    The event id is a UUIDv7 (time-ordered, so ids sort in the order events were made);
    the trace context is the current span's, so a consumer's work joins the request's trace.
    """
    if not _AGGREGATE_TYPE.fullmatch(aggregate_type):
        raise ValueError(f"aggregate type {aggregate_type!r} must be a lowercase identifier")
    event_id = new_id()
    occurred = occurred_at if occurred_at is not None else datetime.now(UTC)
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    envelope = events_pb2.EventEnvelope(
        event_id=str(event_id),
        event_type=payload.DESCRIPTOR.name,
        aggregate_type=aggregate_type,
        aggregate_id=str(aggregate_id),
        tenant_id=str(tenant_id),
        traceparent=carrier.get("traceparent", ""),
    )
    envelope.occurred_at.FromDatetime(occurred)
    envelope.payload.Pack(payload)
    return Event(
        event_id=event_id,
        event_type=envelope.event_type,
        aggregate_type=aggregate_type,
        aggregate_id=str(aggregate_id),
        tenant_id=tenant_id,
        occurred_at=occurred,
        envelope=envelope.SerializeToString(),
    )
