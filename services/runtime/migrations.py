"""Forward-only SQL migrations, one PostgreSQL schema per service.

Files are `NNNN_name.sql` in the service's migrations/ folder. Each is applied once, in
its own transaction, and recorded with its SHA-256 in `<schema>.schema_migrations`; a file
changed after it was applied stops the start. A session advisory lock per schema makes
two processes starting at once apply each file exactly once.

`{schema}` in a file stands for the schema it is applied to, so one file can serve every
schema that needs the same table (the outbox: services.runtime.events.outbox); such files
are recorded in a table of their own (`track`), apart from the schema's own migrations.
"""

import hashlib
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import asyncpg

_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """The migrations on disk and those recorded in the database disagree."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path, schema: str | None = None) -> list[Migration]:
    """The files of `directory`, in order, with {schema} filled in when a schema is given."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named like 0001_create_users.sql")
        sql = path.read_text()
        if schema is not None:
            sql = sql.replace("{schema}", schema)
        migrations.append(Migration(int(match[1]), path.name, sql))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{directory}: two migration files share a version number")
    return migrations


async def migrate(
    conn: asyncpg.Connection, *, schema: str, directory: Path, track: str = "schema_migrations"
) -> list[str]:
    """Applies what is pending and returns the names applied now; `track` is the table (in
    `schema`) that records them."""
    for name, value in (("schema", schema), ("track", track)):
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", value):
            raise MigrationError(f"{name} name {value!r} must be a lowercase identifier")
    migrations = load_migrations(directory, schema)
    lock_key = zlib.crc32(f"nova.migrations.{schema}".encode())
    await conn.execute("SELECT pg_advisory_lock($1)", lock_key)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {schema}.{track} (
                    version integer PRIMARY KEY,
                    name text NOT NULL,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {
            row["version"]: row for row in await conn.fetch(f"SELECT * FROM {schema}.{track}")
        }
        done: list[str] = []
        for migration in migrations:
            recorded = applied.get(migration.version)
            if recorded is not None:
                if recorded["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"{schema}/{migration.name} changed after it was applied; migrations "
                        "are forward-only: restore the file and add a new one"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    f"INSERT INTO {schema}.{track} (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            done.append(migration.name)
        return done
    finally:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock_key)
        except BaseException:
            # A pool may hand connections on without a reset: one still holding the lock
            # must not go back to it.
            conn.terminate()
            raise
