"""The audit log: every domain event of a tenant, kept as its "complete transaction history".

Not a gRPC service: a consumer group ("audit", consumer.py) writes it from the event bus,
and `nova events audit` reads it (repository.list_entries). Its tables live in their own
schema, migrated with the services (`migrate`).
"""

from pathlib import Path

from services.runtime.db import Database
from services.runtime.migrations import migrate as _migrate

SCHEMA = "audit_service"
MIGRATIONS = Path(__file__).parent / "migrations"


async def migrate(db: Database) -> list[str]:
    """Applies the audit schema's pending migrations; returns the names applied now."""
    async with db.connection() as conn:
        return await _migrate(conn, schema=SCHEMA, directory=MIGRATIONS)
