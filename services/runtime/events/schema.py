"""The event machinery's own schema: the PostgreSQL log, consumer offsets, processed event
ids and dead letters (services/runtime/events/migrations), migrated with the services."""

from pathlib import Path

SCHEMA = "nova_events"
MIGRATIONS = Path(__file__).parent / "migrations"
