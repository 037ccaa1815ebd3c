"""How the event path runs: which transport, relay batches, outbox retention."""

from dataclasses import dataclass


@dataclass(frozen=True)
class EventSettings:
    kafka_bootstrap: str | None = None
    """Kafka's bootstrap servers ("host:9092,host2:9092"); None: the PostgreSQL log."""
    kafka_partitions: int = 3
    """Partitions of each topic Nova creates (existing topics keep theirs)."""
    relay_batch_size: int = 500
    """Outbox rows claimed, published and marked per relay transaction."""
    relay_poll_seconds: float = 1.0
    """How often an idle relay looks again without a notification (outbox writes notify)."""
    outbox_retention_seconds: float = 7 * 86400
    """Sent outbox rows are deleted after this long (the bus keeps the history)."""
    event_retention_seconds: float = 7 * 86400
    """The PostgreSQL log's entries and consumers' processed-event ids are kept this long
    (services/runtime/events/retention.py)."""
