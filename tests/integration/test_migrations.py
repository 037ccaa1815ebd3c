"""The migration runner applies each file once, even when processes race, and refuses edits."""

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from services.runtime.migrations import MigrationError, migrate


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


async def test_two_processes_migrating_at_once_apply_each_file_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    schema = f"m_{uuid.uuid4().hex[:8]}"
    directory = _write(
        tmp_path / "m",
        {
            "0001_things.sql": f"CREATE TABLE {schema}.things (id int PRIMARY KEY);",
            "0002_seed.sql": f"INSERT INTO {schema}.things VALUES (1); SELECT pg_sleep(0.2);",
        },
    )
    first, second = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        results = await asyncio.gather(
            migrate(first, schema=schema, directory=directory),
            migrate(second, schema=schema, directory=directory),
        )
        assert sorted(results, key=len) == [[], ["0001_things.sql", "0002_seed.sql"]]
        assert await first.fetchval(f"SELECT count(*) FROM {schema}.things") == 1
        assert await migrate(first, schema=schema, directory=directory) == []
    finally:
        await first.close()
        await second.close()


async def test_a_migration_edited_after_it_was_applied_stops_the_start(
    database_url: str, tmp_path: Path
) -> None:
    schema = f"m_{uuid.uuid4().hex[:8]}"
    directory = _write(tmp_path / "m", {"0001_a.sql": f"CREATE TABLE {schema}.a (id int);"})
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, schema=schema, directory=directory)
        _write(directory, {"0001_a.sql": f"CREATE TABLE {schema}.a (id bigint);"})
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn, schema=schema, directory=directory)
    finally:
        await conn.close()


async def test_a_failing_migration_leaves_nothing_half_applied(
    database_url: str, tmp_path: Path
) -> None:
    schema = f"m_{uuid.uuid4().hex[:8]}"
    directory = _write(
        tmp_path / "m",
        {"0001_bad.sql": f"CREATE TABLE {schema}.half (id int); SELECT * FROM missing_table;"},
    )
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await migrate(conn, schema=schema, directory=directory)
        assert await conn.fetchval("SELECT to_regclass($1)", f"{schema}.half") is None
        assert await conn.fetchval(f"SELECT count(*) FROM {schema}.schema_migrations") == 0
    finally:
        await conn.close()


def test_migration_files_must_be_numbered(tmp_path: Path) -> None:
    from services.runtime.migrations import load_migrations

    _write(tmp_path / "m", {"create_things.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match=r"named like 0001_create_users\.sql"):
        load_migrations(tmp_path / "m")
