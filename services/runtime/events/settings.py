"""How the event path runs: which transport, relay batches, outbox retention, and how Nova
reaches Kafka (durability of the topics it creates, TLS, SASL)."""

from dataclasses import dataclass, field

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaAccess:
    """TLS and SASL towards the brokers; the default (all None) is plaintext without
    authentication, which only a development broker should accept."""

    tls_ca_file: str | None = None
    """CA bundle the brokers' certificates are checked against; set (or a client
    certificate set) means TLS."""
    tls_cert_file: str | None = None
    """Client certificate, for brokers that authenticate clients by mutual TLS."""
    tls_key_file: str | None = None
    sasl_mechanism: str | None = None
    """One of SASL_MECHANISMS; None: no SASL."""
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    """Kept out of repr, so a logged settings object does not leak it."""

    @property
    def tls(self) -> bool:
        return self.tls_ca_file is not None or self.tls_cert_file is not None

    @property
    def security_protocol(self) -> str:
        """aiokafka's name for the combination."""
        if self.sasl_mechanism is None:
            return "SSL" if self.tls else "PLAINTEXT"
        return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"


@dataclass(frozen=True)
class EventSettings:
    kafka_bootstrap: str | None = None
    """Kafka's bootstrap servers ("host:9092,host2:9092"); None: the PostgreSQL log."""
    kafka_partitions: int = 3
    """Partitions of each topic Nova creates (existing topics keep theirs)."""
    kafka_replication_factor: int = 3
    """Replicas of each topic Nova creates: with one, acks=all is one broker's word and
    losing that broker loses the events (1 is for development brokers)."""
    kafka_min_insync_replicas: int = 2
    """min.insync.replicas of the topics Nova creates: how many replicas acknowledge a
    write before acks=all answers, so a single broker's loss loses nothing."""
    kafka_idempotent: bool = True
    """Idempotent producer, so a retried send is stored once; off only for brokers that
    lack it (the Tansu broker of the tests)."""
    kafka_retention_seconds: float = 7 * 86400
    """retention.ms of the topics Nova creates; replays cannot go back further."""
    kafka_access: KafkaAccess = field(default_factory=KafkaAccess)
    relay_batch_size: int = 500
    """Outbox rows claimed, published and marked per relay transaction."""
    relay_poll_seconds: float = 1.0
    """How often an idle relay looks again without a notification (outbox writes notify)."""
    outbox_retention_seconds: float = 7 * 86400
    """Sent outbox rows are deleted after this long (the bus keeps the history)."""
    event_retention_seconds: float = 7 * 86400
    """The PostgreSQL log's entries and consumers' processed-event ids are kept this long
    (services/runtime/events/retention.py), entries longer while a group still needs them."""
    event_abandon_seconds: float = 30 * 86400
    """A consumer group not seen for this long stops holding the log's entries past the
    retention; at least event_retention_seconds, so a stopped group keeps its backlog for
    the retention period at least."""

    def __post_init__(self) -> None:
        if self.event_abandon_seconds < self.event_retention_seconds:
            raise ValueError(
                f"event_abandon_seconds ({self.event_abandon_seconds:g}) must be at least "
                f"event_retention_seconds ({self.event_retention_seconds:g})"
            )
