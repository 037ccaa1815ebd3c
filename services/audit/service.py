"""The audit consumer group's SPEC: its schema, migrations and consumer."""

from pathlib import Path

from services.audit.consumer import GROUP, build_consumer
from services.audit.repository import SCHEMA
from services.runtime.events.consumer import Consumer
from services.runtime.spec import ConsumerContext, ConsumerSpec


def _build(context: ConsumerContext) -> Consumer:
    return build_consumer(context.transport, context.db, context.topics)


SPEC = ConsumerSpec(
    group=GROUP,
    schema=SCHEMA,
    migrations=Path(__file__).parent / "migrations",
    build=_build,
)
