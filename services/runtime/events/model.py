"""What every part of the event path shares: an event, a delivery, and the transport's API.

An Event is the serialized nova.events.v1.EventEnvelope plus the fields routing needs
(read out of it once, so no transport parses protobuf). Topics are per aggregate type
("nova.user.v1", "nova.post.v1"; each service's SPEC declares its aggregate types) and the
key is the aggregate id, so the events of one aggregate keep their order on every
transport.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from google.protobuf.message import DecodeError

from nova.events.v1 import events_pb2

UNDECODABLE = "(undecodable)"
"""The event type of a record that is not an event envelope (see `Delivery.undecodable`)."""


def topic_for(aggregate_type: str) -> str:
    """The topic of an aggregate type's events: "user" -> "nova.user.v1"."""
    return f"nova.{aggregate_type}.v1"


class TransportError(RuntimeError):
    """The event transport cannot do what was asked; the message says what to do."""


class GroupActiveError(TransportError):
    """The group has a running member; what needs it stopped (a rewind) cannot go on."""


@dataclass(frozen=True, slots=True)
class Event:
    """One domain event as it is stored, published and delivered."""

    event_id: uuid.UUID
    event_type: str
    """The payload's short name: "PostCreated"."""
    aggregate_type: str
    aggregate_id: str
    tenant_id: uuid.UUID
    occurred_at: datetime
    envelope: bytes
    """The serialized nova.events.v1.EventEnvelope: all of the above plus the payload."""

    @property
    def topic(self) -> str:
        return topic_for(self.aggregate_type)

    @property
    def key(self) -> bytes:
        """The partitioning key: the aggregate id."""
        return self.aggregate_id.encode()

    def decode(self) -> events_pb2.EventEnvelope:
        envelope = events_pb2.EventEnvelope()
        envelope.ParseFromString(self.envelope)
        return envelope

    @staticmethod
    def from_envelope(data: bytes) -> Event:
        """The event a serialized envelope carries (what a consumer receives). Raises
        UndecodableRecord, saying why, for bytes that are not a whole envelope."""
        envelope = events_pb2.EventEnvelope()
        try:
            envelope.ParseFromString(data)
        except DecodeError as error:
            raise UndecodableRecord(f"not a protobuf EventEnvelope: {error}") from None
        # Protobuf parses many byte strings (unknown fields are kept), so check what
        # routing needs: an envelope without these fields is someone else's message.
        missing = [
            name
            for name in ("event_id", "event_type", "aggregate_type", "tenant_id")
            if not getattr(envelope, name)
        ]
        if missing or not envelope.HasField("payload"):
            raise UndecodableRecord("not an EventEnvelope: no " + ", ".join(missing or ["payload"]))
        try:
            event_id = uuid.UUID(envelope.event_id)
            tenant_id = uuid.UUID(envelope.tenant_id)
        except ValueError:
            raise UndecodableRecord(
                f"not an EventEnvelope: event_id {envelope.event_id[:40]!r} or tenant_id "
                f"{envelope.tenant_id[:40]!r} is not a UUID"
            ) from None
        return Event(
            event_id=event_id,
            event_type=envelope.event_type,
            aggregate_type=envelope.aggregate_type,
            aggregate_id=envelope.aggregate_id,
            tenant_id=tenant_id,
            occurred_at=envelope.occurred_at.ToDatetime(tzinfo=UTC),
            envelope=data,
        )


class UndecodableRecord(ValueError):
    """A record in the log that is not an event envelope; the message says why."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event as a subscription hands it over, with its place in the log."""

    event: Event
    topic: str
    partition: int
    """Always 0 on the PostgreSQL log, which has one ordered sequence."""
    offset: int
    """The position in the partition (the log's sequence number, or Kafka's offset)."""
    undecodable: str | None = None
    """Why the record is not an event (then `event` is a stand-in from `undecodable`)."""

    @staticmethod
    def of_record(raw: bytes | None, topic: str, partition: int, offset: int) -> Delivery:
        """The delivery of one stored record. A record that is not an envelope (a Kafka
        tombstone, another producer's message, corrupt bytes) becomes an undecodable
        delivery rather than an error, so the consumer can dead-letter it and go on."""
        if raw is None:
            reason = "a tombstone: the record has no value"
        else:
            try:
                return Delivery(Event.from_envelope(raw), topic, partition, offset)
            except UndecodableRecord as error:
                reason = str(error)
        stand_in = Event(
            # The same record gives the same id: redelivered, it updates its dead letter.
            event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"nova-record:{topic}/{partition}/{offset}"),
            event_type=UNDECODABLE,
            aggregate_type="",
            aggregate_id="",
            tenant_id=uuid.UUID(int=0),
            occurred_at=datetime.fromtimestamp(0, UTC),
            envelope=raw or b"",
        )
        return Delivery(stand_in, topic, partition, offset, undecodable=reason)


@dataclass(frozen=True, slots=True)
class TopicLag:
    """How far a consumer group is behind on one topic."""

    topic: str
    positions: Mapping[int, int | None]
    """Per partition, the group's committed position (None: it has committed nothing
    there): on the PostgreSQL log (partition 0) the last seq it processed, on Kafka the
    offset it reads next."""
    events: int
    """Events of the topic after those positions (all it holds where none is committed)."""
    seconds: float
    """Age of the oldest of them, 0 when caught up: how late the group's effects are."""


@dataclass(frozen=True, slots=True)
class GroupLag:
    """A consumer group's lag per topic, and who is consuming."""

    group: str
    topics: tuple[TopicLag, ...]
    members: int
    """Members consuming now (the PostgreSQL log's group has one active member at most)."""
    standby: int = 0
    """Members waiting to take over (only the PostgreSQL log has them)."""

    @property
    def events(self) -> int:
        return sum(topic.events for topic in self.topics)

    @property
    def seconds(self) -> float:
        return max((topic.seconds for topic in self.topics), default=0.0)


class Publisher(Protocol):
    async def publish(self, events: Sequence[Event]) -> None:
        """Returns once every event is durably stored by the transport, in the order
        given per aggregate. Raises on failure (some may then be stored: at least once)."""


class Subscription(Protocol):
    async def fetch(self, max_events: int, timeout_seconds: float) -> list[Delivery]:
        """The next deliveries after this group's committed position, in order per
        partition; waits up to timeout_seconds for the first, then returns [] if none."""

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        """Records these deliveries, and all before them in their partitions, as processed
        by the group: a restarted consumer continues after them."""


class Transport(Protocol):
    name: str
    """"kafka" or "postgres", for logs, metrics and benchmark tables."""

    def publisher(self) -> AbstractAsyncContextManager[Publisher]: ...

    def subscribe(
        self, group: str, topics: Sequence[str]
    ) -> AbstractAsyncContextManager[Subscription]:
        """Joins consumer group `group` on `topics`; a group's members share the work."""

    async def rewind(self, group: str, topics: Sequence[str], since: datetime | None) -> None:
        """Moves the group's committed position back (or forward) to the first event
        published at or after `since` (None: the beginning of the log). The group's
        consumers must be stopped; they re-read from there when they start."""

    async def lag(self, group: str, topics: Sequence[str] = ()) -> GroupLag:
        """How far `group` is behind on `topics` and on every other topic it has committed
        positions on, and its members; reads only, so it works while the group runs."""

    async def groups(self) -> list[str]:
        """The consumer groups the transport holds committed positions for, by name."""
