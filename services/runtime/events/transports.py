"""Which transport a process uses: Kafka when NOVA_KAFKA_BOOTSTRAP names one, otherwise the
PostgreSQL log, so nothing beyond the database is needed to run the event path.

A configured Kafka that cannot be reached stops the start with an error saying so,
instead of falling back silently: events would otherwise go somewhere other than where
the operator's consumers read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from aiokafka.errors import KafkaError

from services.runtime.db import Database
from services.runtime.events.kafka import KafkaTransport
from services.runtime.events.model import GroupActiveError, Transport, TransportError
from services.runtime.events.pglog import PostgresLog
from services.runtime.events.settings import EventSettings

__all__ = ["GroupActiveError", "KafkaUnavailableError", "open_transport"]

KAFKA_CONNECT_TIMEOUT_SECONDS = 10.0


class KafkaUnavailableError(TransportError):
    """NOVA_KAFKA_BOOTSTRAP names a Kafka that did not answer."""


@asynccontextmanager
async def open_transport(db: Database, settings: EventSettings) -> AsyncIterator[Transport]:
    """Kafka at settings.kafka_bootstrap (topics it creates get settings.kafka_partitions
    partitions), or the PostgreSQL log in `db` when that is None."""
    kafka_bootstrap = settings.kafka_bootstrap
    if kafka_bootstrap is None:
        yield PostgresLog(db)
        return
    async with AsyncExitStack() as stack:
        kafka = KafkaTransport.from_settings(kafka_bootstrap, settings)
        try:
            await asyncio.wait_for(stack.enter_async_context(kafka), KAFKA_CONNECT_TIMEOUT_SECONDS)
        except (KafkaError, OSError, TimeoutError) as error:
            raise KafkaUnavailableError(
                f"Kafka at NOVA_KAFKA_BOOTSTRAP={kafka_bootstrap!r} did not answer within "
                f"{KAFKA_CONNECT_TIMEOUT_SECONDS:.0f} s ({type(error).__name__}: {error}); "
                "start the broker or fix the address, or unset NOVA_KAFKA_BOOTSTRAP to use "
                "the PostgreSQL event log"
            ) from error
        yield kafka
