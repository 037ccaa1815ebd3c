"""Consumer lag on Kafka: the group's committed offsets against the partitions' ends, the
age of the first record it has not committed, and its members.

The ends and the first records are read with a group-less consumer rather than asked of
ListOffsets, whose "latest" the Tansu test broker answers short of the end (kafka.py): it
seeks each partition to the group's position and fetches once, which gives the first
uncommitted record (its timestamp is the lag in seconds) and the high watermark the fetch
response carries. A caught-up partition costs one empty fetch. The whole read is bounded
(10 s); past that it fails, naming the partitions, rather than hang a status or a sampler.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupIdNotFound, for_code

from services.runtime.events.model import GroupLag, TopicLag, TransportError

_POLL_MS = 100
_READ_TIMEOUT_SECONDS = 10.0


async def kafka_lag(
    admin: AIOKafkaAdminClient, reader: AIOKafkaConsumer, group: str, topics: Sequence[str]
) -> GroupLag:
    """`group`'s lag on `topics` and on every other topic it has committed offsets on;
    `reader` is a started consumer without a group, which this leaves assigned."""
    existing = await reader.topics()
    asked = set(topics)
    candidates = sorted(asked | {topic for topic in existing if not topic.startswith("__")})
    partitions = [
        TopicPartition(topic, partition)
        for topic in candidates
        for partition in sorted(reader.partitions_for_topic(topic) or ())
    ]
    # Partitions named explicitly (none would ask for all): Tansu cannot answer that.
    fetched = (
        await admin.list_consumer_group_offsets(group, partitions=partitions) if partitions else {}
    )
    committed = {
        partition: fetched[partition].offset
        for partition in partitions
        if partition in fetched and fetched[partition].offset >= 0
    }
    shown = asked | {partition.topic for partition in committed}
    wanted = [partition for partition in partitions if partition.topic in shown]
    beginnings = await reader.beginning_offsets(wanted) if wanted else {}
    starts = {
        partition: max(committed.get(partition, 0), beginnings[partition]) for partition in wanted
    }
    unread = await _first_unread(reader, starts)
    now_ms = time.time() * 1000
    lags = []
    for topic in sorted(shown):
        mine = [partition for partition in wanted if partition.topic == topic]
        stamps = [stamp for p in mine if (stamp := unread[p][1]) is not None]
        lags.append(
            TopicLag(
                topic=topic,
                positions={p.partition: committed.get(p) for p in mine},
                events=sum(unread[p][0] - starts[p] for p in mine),
                seconds=max(0.0, (now_ms - min(stamps)) / 1000) if stamps else 0.0,
            )
        )
    return GroupLag(group=group, topics=tuple(lags), members=await _members(admin, group))


async def _first_unread(
    reader: AIOKafkaConsumer, starts: dict[TopicPartition, int]
) -> dict[TopicPartition, tuple[int, int | None]]:
    """Per partition, its end (high watermark) and the timestamp (ms) of the record at its
    start, None when the start is the end."""
    if not starts:
        return {}
    reader.assign(list(starts))
    for partition, offset in starts.items():
        reader.seek(partition, offset)
    found: dict[TopicPartition, tuple[int, int | None]] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _READ_TIMEOUT_SECONDS
    while len(found) < len(starts):
        pending = [partition for partition in starts if partition not in found]
        if loop.time() > deadline:
            raise TransportError(
                f"reading the ends of {sorted(pending)} took over {_READ_TIMEOUT_SECONDS:g} s"
            )
        batches = await reader.getmany(*pending, timeout_ms=_POLL_MS)
        for partition in pending:
            records = batches.get(partition, [])
            highwater = reader.highwater(partition)
            if records:
                end = highwater if highwater is not None else records[-1].offset + 1
                found[partition] = (end, records[0].timestamp)
            elif highwater is not None and await reader.position(partition) >= highwater:
                found[partition] = (highwater, None)
            else:
                continue
            reader.pause(partition)
    return found


async def _members(admin: AIOKafkaAdminClient, group: str) -> int:
    """Members of the group now (a group without any is "Empty", or unknown)."""
    for response in await admin.describe_consumer_groups([group]):
        for entry in response.groups:
            error_code, name, members = entry[0], entry[1], entry[5]
            if name != group or error_code == GroupIdNotFound.errno:
                continue
            if error_code:
                raise for_code(error_code)(f"describing consumer group {group!r}")
            return len(members)
    return 0
