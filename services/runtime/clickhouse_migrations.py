"""Forward-only ClickHouse migrations, named and checksummed as PostgreSQL's are
(services.runtime.migrations): `NNNN_name.sql` files, each applied once and recorded with
its SHA-256 in `<database>.schema_migrations`; a file changed after it was applied stops
the start.

ClickHouse has no transactions around DDL, so a file is a list of statements (split at a
`;` that ends a line), each written to be safe to run again (`IF NOT EXISTS`): a start cut
short between two statements, or two replicas starting at once, applies the rest again
and changes nothing. `{database}` in a file stands for the database it is applied to.
"""

from __future__ import annotations

import re
from pathlib import Path

from services.runtime.clickhouse import ClickHouse
from services.runtime.migrations import MigrationError, load_migrations

_STATEMENT_END = re.compile(r";\s*$", re.MULTILINE)


def statements(sql: str) -> list[str]:
    """The statements of a migration file, without comments-only leftovers."""
    parts = (part.strip() for part in _STATEMENT_END.split(sql))
    return [part for part in parts if part and not _only_comments(part)]


def _only_comments(text: str) -> bool:
    return all(line.strip().startswith("--") or not line.strip() for line in text.splitlines())


async def migrate_clickhouse(engine: ClickHouse, directory: Path) -> list[str]:
    """Applies what is pending in `directory` to engine.database; returns the names applied
    now."""
    database = engine.database
    await engine.command(
        f"""CREATE TABLE IF NOT EXISTS {database}.schema_migrations (
                version UInt32, name String, checksum String,
                applied_at DateTime DEFAULT now())
            ENGINE = ReplacingMergeTree ORDER BY version"""
    )
    rows = await engine.query(f"SELECT version, checksum FROM {database}.schema_migrations FINAL")
    applied = {int(version): str(checksum) for version, checksum in rows}
    done: list[str] = []
    for migration in load_migrations(directory):
        recorded = applied.get(migration.version)
        if recorded is not None:
            if recorded != migration.checksum:
                raise MigrationError(
                    f"clickhouse/{migration.name} changed after it was applied; migrations "
                    "are forward-only: restore the file and add a new one"
                )
            continue
        for statement in statements(migration.sql.replace("{database}", database)):
            await engine.command(statement)
        await engine.command(
            f"INSERT INTO {database}.schema_migrations (version, name, checksum) "
            "VALUES ({version:UInt32}, {name:String}, {checksum:String})",
            {"version": migration.version, "name": migration.name, "checksum": migration.checksum},
        )
        done.append(migration.name)
    return done
