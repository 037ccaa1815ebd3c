"""The audit consumer group's SPEC: its schema, migrations and consumer."""

from pathlib import Path

from services.audit.consumer import GROUP, build_consumer
from services.audit.repository import SCHEMA
from services.runtime.spec import ConsumerSpec

SPEC = ConsumerSpec(
    group=GROUP,
    schema=SCHEMA,
    migrations=Path(__file__).parent / "migrations",
    build=build_consumer,
)
