"""The Kafka transport (aiokafka): what production runs when NOVA_KAFKA_BOOTSTRAP is set.

Events are keyed by aggregate id, so one aggregate's events land on one partition in the
order they were sent (aiokafka keeps one request in flight per partition, so a retry
cannot reorder them). `publish` waits for every send's acknowledgement (acks=all) before
it returns: the relay marks outbox rows sent only once the broker has them (relay.py
runs `publish` and the UPDATE … SET sent_at in one transaction, publish first, so a failed
or unacknowledged send leaves the rows unsent). The producer is idempotent unless
`idempotent` is off (NOVA_KAFKA_IDEMPOTENT=false: the Tansu broker of the tests refuses
InitProducerId); without it a retried send may store an event twice, which consumers
tolerate (at-least-once, duplicates dropped by event id).

Topics Nova creates get `replication_factor` replicas, `min_insync_replicas` and an
explicit retention.ms, so acks=all means "on that many brokers" and a replay's reach is
known: rewinding to before the retention is refused (ReplayBeyondRetentionError) instead
of silently starting at whatever the broker still holds. Producer, consumers and the admin
client connect with the same TLS/SASL options (KafkaAccess).

Consumers are plain consumer-group members with manual commits: a restarted member
re-reads everything after the group's last commit. `lag` (kafka_lag.py) compares those
commits with the partitions' ends.

Rewind sets the group's committed offsets. Two things the Tansu broker does differently
from Kafka shape how:

* It refuses offset commits from outside the group (generation -1, no member id, which
  Kafka accepts for an empty group), so rewind joins the group as its only member, waits
  for every partition, commits, and leaves; if a consumer is still running it never gets
  every partition and rewind fails with GroupActiveError.
* Its ListOffsets answers are low. By timestamp it answers from the batches' append
  times, at batch granularity, and "offset 0, timestamp -1" where Kafka answers "none";
  for the latest offset it answers the last batch's first offset + 1, short of the end
  when that batch holds several records. So rewind takes them as lower bounds and reads
  forward from them to the first record stamped at or after `since`, or to the high
  watermark the fetch responses carry (which Tansu gets right). On Kafka the first
  record read is already the answer, and a partition at its end costs one empty fetch.

A third: Tansu numbers a new group's first generation 0, and aiokafka sends LeaveGroup
only for generations above 0, so a first member that stopped would block the group's
next join until its session expired. Stopping a consumer therefore sends that LeaveGroup
itself (the one place this module reads aiokafka internals: the coordinator's member id).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.protocol.group import LeaveGroupRequest

from services.runtime.events.kafka_lag import kafka_lag
from services.runtime.events.model import (
    Delivery,
    Event,
    GroupActiveError,
    GroupLag,
    TransportError,
)
from services.runtime.events.settings import EventSettings, KafkaAccess

_SCAN_POLL_MS = 100
_SCAN_TIMEOUT_SECONDS = 60.0
"""How long rewind may read forward from the broker's offsets to the exact ones."""


class ReplayBeyondRetentionError(TransportError):
    """A rewind to before the topics' retention: those events are gone from the broker."""


def connection_options(access: KafkaAccess) -> dict[str, Any]:
    """The aiokafka keyword arguments for TLS and SASL, the same for every client kind."""
    options: dict[str, Any] = {"security_protocol": access.security_protocol}
    if access.tls:
        options["ssl_context"] = create_ssl_context(
            cafile=access.tls_ca_file, certfile=access.tls_cert_file, keyfile=access.tls_key_file
        )
    if access.sasl_mechanism is not None:
        options["sasl_mechanism"] = access.sasl_mechanism
        options["sasl_plain_username"] = access.sasl_username
        options["sasl_plain_password"] = access.sasl_password
    return options


@dataclass
class KafkaTransport:
    """The Transport on Kafka (services.runtime.events.model.Transport).

    Use as ``async with KafkaTransport(bootstrap) as kafka:``; entering it connects, and
    publishing to or subscribing to a topic that is missing creates it with `partitions`
    partitions, `replication_factor` replicas, `min_insync_replicas` and `retention_seconds`.
    The defaults are production's (EventSettings'); a single-node development broker needs
    replication_factor=1, min_insync_replicas=1 (and Tansu idempotent=False).
    The group timeouts are Kafka's defaults' order of magnitude (and within a stock
    broker's allowed range); tests lower them, since on Tansu a join takes about half
    the session timeout.
    """

    bootstrap: str
    partitions: int = 3
    replication_factor: int = 3
    min_insync_replicas: int = 2
    retention_seconds: float = 7 * 86400
    idempotent: bool = True
    access: KafkaAccess = field(default_factory=KafkaAccess)
    session_timeout_ms: int = 6_000
    heartbeat_interval_ms: int = 1_500
    name: str = field(default="kafka", init=False)
    _admin: AIOKafkaAdminClient | None = field(default=None, init=False, repr=False)
    _client: AIOKafkaClient | None = field(default=None, init=False, repr=False)
    _topics: set[str] = field(default_factory=set, init=False, repr=False)

    @classmethod
    def from_settings(cls, bootstrap: str, settings: EventSettings) -> KafkaTransport:
        return cls(
            bootstrap,
            partitions=settings.kafka_partitions,
            replication_factor=settings.kafka_replication_factor,
            min_insync_replicas=settings.kafka_min_insync_replicas,
            retention_seconds=settings.kafka_retention_seconds,
            idempotent=settings.kafka_idempotent,
            access=settings.kafka_access,
        )

    def new_topic(self, topic: str) -> NewTopic:
        """How a topic Nova creates is configured (existing topics are left as they are)."""
        configs = {
            "retention.ms": str(int(self.retention_seconds * 1000)),
            "min.insync.replicas": str(self.min_insync_replicas),
        }
        return NewTopic(topic, self.partitions, self.replication_factor, topic_configs=configs)

    async def __aenter__(self) -> KafkaTransport:
        if not 1 <= self.min_insync_replicas <= self.replication_factor:
            raise ValueError(
                f"min_insync_replicas ({self.min_insync_replicas}) must be between 1 and "
                f"replication_factor ({self.replication_factor})"
            )
        try:
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **self._options())
            await self._admin.start()
            self._client = AIOKafkaClient(bootstrap_servers=self.bootstrap, **self._options())
            await self._client.bootstrap()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def ensure_topics(self, topics: Iterable[str]) -> None:
        """Creates the topics that do not exist yet (an existing one is left as it is)."""
        missing = sorted(set(topics) - self._topics)
        if not missing:
            return
        if self._admin is None:
            raise RuntimeError("KafkaTransport is used outside `async with`")
        response = await self._admin.create_topics([self.new_topic(topic) for topic in missing])
        for topic, code, *detail in response.topic_errors:
            if code not in (0, TopicAlreadyExistsError.errno):
                raise for_code(code)(f"creating topic {topic!r}: {detail}")
        self._topics.update(missing)

    @asynccontextmanager
    async def publisher(self) -> AsyncIterator[KafkaPublisher]:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=self.idempotent,
            max_batch_size=_MAX_BATCH_BYTES,
            **self._options(),
        )
        try:
            await producer.start()
            yield KafkaPublisher(producer, self)
        finally:
            await producer.stop()

    @asynccontextmanager
    async def subscribe(
        self, group: str, topics: Sequence[str]
    ) -> AsyncIterator[KafkaSubscription]:
        await self.ensure_topics(topics)
        # A fetch waits at most this long for new records: the broker's default (500 ms)
        # was most of the commit-to-effect lag (`./dev bench events`).
        consumer = self._consumer(group, fetch_max_wait_ms=_FETCH_MAX_WAIT_MS)
        consumer.subscribe(list(topics))
        try:
            await consumer.start()
            yield KafkaSubscription(consumer)
        finally:
            await self._stop(consumer)

    async def rewind(self, group: str, topics: Sequence[str], since: datetime | None) -> None:
        self._check_within_retention(since)
        await self.ensure_topics(topics)
        targets = await self._offsets_at(topics, since)
        await self._commit_as_only_member(group, topics, targets)

    async def lag(self, group: str, topics: Sequence[str] = ()) -> GroupLag:
        if self._admin is None:
            raise RuntimeError("KafkaTransport is used outside `async with`")
        reader = self._consumer(None, fetch_max_wait_ms=_SCAN_POLL_MS)
        try:
            await reader.start()
            return await kafka_lag(self._admin, reader, group, topics)
        finally:
            await reader.stop()

    async def groups(self) -> list[str]:
        if self._admin is None:
            raise RuntimeError("KafkaTransport is used outside `async with`")
        return sorted(name for name, *_ in await self._admin.list_consumer_groups())

    def _check_within_retention(self, since: datetime | None) -> None:
        """Refuses a `since` older than the retention: the broker no longer holds those
        events, and rewinding would quietly start later than asked."""
        if since is None:
            return
        oldest = datetime.now(UTC) - timedelta(seconds=self.retention_seconds)
        if since < oldest:
            raise ReplayBeyondRetentionError(
                f"--from {since.isoformat()} is older than the Kafka retention "
                f"({self.retention_seconds / 3600:g} h, NOVA_KAFKA_RETENTION_HOURS): events "
                f"before {oldest.isoformat(timespec='seconds')} are gone; give a later time "
                "or 'beginning' (the oldest event still kept)"
            )

    def _options(self) -> dict[str, Any]:
        return connection_options(self.access)

    def _consumer(self, group: str | None, **options: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            **self._options(),
            **options,
        )

    async def _offsets_at(
        self, topics: Sequence[str], since: datetime | None
    ) -> dict[TopicPartition, int]:
        """Per partition of `topics`, the offset of the first record at or after `since`."""
        # Short fetch waits: reading to a partition's end waits for one empty answer.
        reader = self._consumer(None, fetch_max_wait_ms=_SCAN_POLL_MS)
        try:
            await reader.start()
            await reader.topics()
            partitions = [
                TopicPartition(topic, partition)
                for topic in topics
                for partition in sorted(reader.partitions_for_topic(topic) or ())
            ]
            if since is None:
                return dict(await reader.beginning_offsets(partitions))
            return await _first_at(reader, partitions, int(since.timestamp() * 1000))
        finally:
            await reader.stop()

    async def _commit_as_only_member(
        self, group: str, topics: Sequence[str], targets: Mapping[TopicPartition, int]
    ) -> None:
        listener = _Assignment(set(targets))
        member = self._consumer(group)
        member.subscribe(list(topics), listener=listener)
        try:
            await member.start()
            wait_s = max(30.0, 3 * self.session_timeout_ms / 1000)
            try:
                await asyncio.wait_for(listener.complete.wait(), wait_s)
            except TimeoutError:
                raise GroupActiveError(
                    f"consumer group {group!r} did not hand every partition to the rewind "
                    f"within {wait_s:.0f} s: stop its consumers, then rewind"
                ) from None
            await member.commit(dict(targets))
        finally:
            await self._stop(member)

    async def _stop(self, consumer: AIOKafkaConsumer) -> None:
        coordinator: Any = getattr(consumer, "_coordinator", None)
        first_generation = (
            coordinator is not None
            and getattr(coordinator, "generation", None) == 0
            and bool(getattr(coordinator, "member_id", ""))
            and getattr(coordinator, "coordinator_id", None) is not None
        )
        leave = (
            (coordinator.group_id, coordinator.member_id, coordinator.coordinator_id)
            if first_generation
            else None
        )
        await consumer.stop()
        if leave is not None and self._client is not None:
            group, member_id, node_id = leave
            with contextlib.suppress(KafkaError):
                await self._client.send(node_id, LeaveGroupRequest(group, member_id))


@dataclass(frozen=True)
class KafkaPublisher:
    producer: AIOKafkaProducer
    transport: KafkaTransport

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        await self.transport.ensure_topics({event.topic for event in events})
        # The events go out as record batches of our own, one per partition until it is
        # full, filled in order (one aggregate's events stay in order on its partition),
        # then every batch's acknowledgement is awaited, so a failure of any raises here.
        # One send() per event cost more of the relay's time than the broker took.
        partitions: dict[str, list[int]] = {}
        partition_of: dict[tuple[str, bytes], int] = {}
        batches: dict[tuple[str, int], list[Any]] = {}
        for event in events:
            topic, key = event.topic, event.key
            partition = partition_of.get((topic, key))
            if partition is None:
                if topic not in partitions:
                    partitions[topic] = sorted(await self.producer.partitions_for(topic))
                partition = _PARTITIONER(key, partitions[topic], partitions[topic])
                partition_of[topic, key] = partition
            filling = batches.setdefault((topic, partition), [])
            headers = [
                ("event-id", str(event.event_id).encode()),
                ("event-type", event.event_type.encode()),
            ]
            record = {"timestamp": None, "key": key, "value": event.envelope, "headers": headers}
            if not filling or filling[-1].append(**record) is None:
                filling.append(self.producer.create_batch())
                filling[-1].append(**record)  # an empty batch takes any record
        acks = [
            await self.producer.send_batch(batch, topic, partition=partition)
            for (topic, partition), filled in batches.items()
            for batch in filled
        ]
        await asyncio.gather(*acks)


@dataclass(frozen=True)
class KafkaSubscription:
    consumer: AIOKafkaConsumer

    async def fetch(self, max_events: int, timeout_seconds: float) -> list[Delivery]:
        batches = await self.consumer.getmany(
            timeout_ms=int(timeout_seconds * 1000), max_records=max_events
        )
        return [
            Delivery.of_record(record.value, record.topic, record.partition, record.offset)
            for records in batches.values()
            for record in records
        ]

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for delivery in deliveries:
            partition = TopicPartition(delivery.topic, delivery.partition)
            offsets[partition] = max(offsets.get(partition, 0), delivery.offset + 1)
        if offsets:
            await self.consumer.commit(offsets)


_FETCH_MAX_WAIT_MS = 50
_MAX_BATCH_BYTES = 512 * 1024
"""A record batch's size limit: a relay pass of 500 events fills one per partition
instead of aiokafka's default 16 KiB, each of which waited for the one before it on its
partition to be acknowledged. Below the brokers' default message.max.bytes (1 MiB)."""
_PARTITIONER = DefaultPartitioner()
"""The producer's own: murmur2 of the key, as every Kafka client's default partitioner."""


class _Assignment(ConsumerRebalanceListener):  # type: ignore[misc]
    """Sets `complete` once this member holds every partition in `wanted`."""

    def __init__(self, wanted: set[TopicPartition]) -> None:
        self.wanted = wanted
        self.complete = asyncio.Event()

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.complete.clear()

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        if self.wanted <= set(assigned):
            self.complete.set()


async def _first_at(
    reader: AIOKafkaConsumer, partitions: Sequence[TopicPartition], timestamp_ms: int
) -> dict[TopicPartition, int]:
    """Per partition, the offset of the first record stamped at or after `timestamp_ms`,
    or the partition's end. The broker's answers are lower bounds to read forward from
    (exact on Kafka, see the module docstring for Tansu)."""
    ends = await reader.end_offsets(partitions)
    hints = await reader.offsets_for_times(dict.fromkeys(partitions, timestamp_ms))
    starts = {}
    for partition in partitions:
        hint = hints.get(partition)
        found = hint is not None and hint.timestamp >= 0
        starts[partition] = min(hint.offset, ends[partition]) if found else ends[partition]
    return await _read_forward(reader, starts, timestamp_ms)


async def _read_forward(
    reader: AIOKafkaConsumer, starts: Mapping[TopicPartition, int], timestamp_ms: int
) -> dict[TopicPartition, int]:
    """Reads each partition from its start to the first record at or after `timestamp_ms`;
    a partition read to its high watermark (from the fetch responses, which Tansu gets
    right) without one ends there."""
    reader.assign(list(starts))
    for partition, offset in starts.items():
        reader.seek(partition, offset)
    targets: dict[TopicPartition, int] = {}
    deadline = asyncio.get_running_loop().time() + _SCAN_TIMEOUT_SECONDS
    while len(targets) < len(starts):
        if asyncio.get_running_loop().time() > deadline:
            raise KafkaError(f"reading {sorted(set(starts) - set(targets))} took too long")
        pending = [partition for partition in starts if partition not in targets]
        batches = await reader.getmany(*pending, timeout_ms=_SCAN_POLL_MS)
        for partition in pending:
            records = batches.get(partition, [])
            first = next((r.offset for r in records if r.timestamp >= timestamp_ms), None)
            position = await reader.position(partition)
            highwater = reader.highwater(partition)
            if first is not None:
                targets[partition] = int(first)
            elif highwater is not None and position >= highwater:
                targets[partition] = int(position)
            else:
                continue
            reader.pause(partition)
    return targets
