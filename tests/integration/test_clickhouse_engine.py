"""The ClickHouse engine interface apart from analytics: migrations applied once and
checksummed, statements split, a malformed NOVA_CLICKHOUSE_URL refused without echoing it,
and an unreachable server named at start. What no server here can show (the server
client's queries and inserts) is said in the README's "Against a server"."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from services.runtime.clickhouse import ClickHouseUnavailable, check_url, open_clickhouse
from services.runtime.clickhouse_migrations import migrate_clickhouse, statements
from services.runtime.env import ConfigError
from services.runtime.migrations import MigrationError
from services.runtime.spec import Dependencies
from tests.brokers import free_port


def test_a_file_is_split_into_its_statements_without_comment_leftovers() -> None:
    sql = "-- a table\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\n-- and b\nSELECT 1;\n-- end\n"
    assert statements(sql) == [
        "-- a table\nCREATE TABLE a (x UInt8) ENGINE = Memory",
        "-- and b\nSELECT 1",
    ]


async def test_migrations_apply_once_and_a_changed_file_stops_the_start(
    deps: Dependencies, tmp_path: Path
) -> None:
    chdb = deps.config.analytics.chdb_path
    assert chdb is not None
    name = f"migrations_{uuid.uuid4().hex[:8]}"
    migration = tmp_path / "0001_create_things.sql"
    migration.write_text(
        "CREATE TABLE IF NOT EXISTS {database}.things (id UInt32) ENGINE = MergeTree ORDER BY id;"
        "\nINSERT INTO {database}.things VALUES (1);\n"
    )
    async with open_clickhouse(None, chdb, name) as engine:
        try:
            assert await migrate_clickhouse(engine, tmp_path) == ["0001_create_things.sql"]
            assert await migrate_clickhouse(engine, tmp_path) == []
            assert await engine.query(f"SELECT count() FROM {name}.things") == [(1,)]
            migration.write_text(migration.read_text() + "\n-- edited\n")
            with pytest.raises(MigrationError, match=r"0001_create_things\.sql changed after"):
                await migrate_clickhouse(engine, tmp_path)
        finally:
            await engine.command(f"DROP DATABASE {name}")


@pytest.mark.parametrize(
    "url", ["ftp://user:secret@host:8123", "http://", "user:secret@host:8123", "secret"]
)
def test_a_malformed_url_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(ConfigError, match="NOVA_CLICKHOUSE_URL must look like") as refused:
        check_url(url)
    assert "secret" not in str(refused.value)


def test_a_server_url_is_taken_as_given() -> None:
    assert check_url("https://nova:pw@clickhouse.internal:8443") == (
        "https://nova:pw@clickhouse.internal:8443"
    )


async def test_an_unreachable_server_is_named_at_start_without_its_password(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://nova:secret@127.0.0.1:{port}"
    with pytest.raises(ClickHouseUnavailable, match=re.escape(f"127.0.0.1:{port}")) as refused:
        async with open_clickhouse(url, tmp_path, "nova"):
            pass
    assert "secret" not in str(refused.value)


async def test_a_database_name_must_be_an_identifier(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a lowercase identifier"):
        async with open_clickhouse(None, tmp_path, "nova; DROP DATABASE x"):
            pass
