"""The process's ClickHouse: one interface over the embedded engine (chdb, in the data folder)
and a server (NOVA_CLICKHOUSE_URL), so the analytics SQL is written once.

Both sides are clickhouse-connect clients with the same query, command and raw_insert
methods and the same server-side parameter binding ({name:Type}). A server is reached
with clickhouse-connect's asyncio client (aiohttp). chdb is clickhouse-connect's
experimental in-process client: its calls block and chdb keeps one engine (one data
path) per process, so they run on a small thread pool of their own, never on the event
loop, and a process opens at most one path.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from services.runtime.env import ConfigError

T = TypeVar("T")

Rows = list[tuple[Any, ...]]
Parameters = Mapping[str, Any]
Settings = Mapping[str, Any]

CHDB_THREADS = 4
"""Threads that run chdb calls: a long insert does not hold up the short reads behind it."""

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
_SCHEMES = ("http", "https", "clickhouse", "clickhouses")


class ClickHouse(Protocol):
    """What the analytics service needs of ClickHouse, whichever engine answers."""

    name: str
    """"chdb" or "server", for logs and the banner."""
    database: str

    async def query(self, sql: str, parameters: Parameters | None = None) -> Rows:
        """Rows of a SELECT; `{name:Type}` placeholders bound from `parameters` server-side."""
        ...

    async def command(
        self, sql: str, parameters: Parameters | None = None, settings: Settings | None = None
    ) -> None:
        """A statement without rows (DDL, INSERT … VALUES), bound as query's are."""
        ...

    async def insert(
        self, table: str, columns: Sequence[str], json_rows: bytes, settings: Settings
    ) -> None:
        """Inserts `json_rows` (JSONEachRow: one JSON object a line) in one INSERT."""
        ...

    async def close(self) -> None: ...


@dataclass
class _Chdb:
    client: Any
    database: str
    name: str = "chdb"
    _threads: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(CHDB_THREADS, thread_name_prefix="chdb")
    )

    async def _off_loop(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    async def query(self, sql: str, parameters: Parameters | None = None) -> Rows:
        result = await self._off_loop(lambda: self.client.query(sql, parameters=parameters))
        return [tuple(row) for row in result.result_rows]

    async def command(
        self, sql: str, parameters: Parameters | None = None, settings: Settings | None = None
    ) -> None:
        await self._off_loop(
            lambda: self.client.command(sql, parameters=parameters, settings=dict(settings or {}))
        )

    async def insert(
        self, table: str, columns: Sequence[str], json_rows: bytes, settings: Settings
    ) -> None:
        await self._off_loop(
            lambda: self.client.raw_insert(
                table,
                list(columns),
                insert_block=json_rows,
                fmt="JSONEachRow",
                settings=dict(settings),
            )
        )

    async def close(self) -> None:
        await self._off_loop(self.client.close)
        self._threads.shutdown(wait=True)


@dataclass
class _Server:
    client: Any
    database: str
    name: str = "server"

    async def query(self, sql: str, parameters: Parameters | None = None) -> Rows:
        result = await self.client.query(sql, parameters=parameters)
        return [tuple(row) for row in result.result_rows]

    async def command(
        self, sql: str, parameters: Parameters | None = None, settings: Settings | None = None
    ) -> None:
        await self.client.command(sql, parameters=parameters, settings=dict(settings or {}))

    async def insert(
        self, table: str, columns: Sequence[str], json_rows: bytes, settings: Settings
    ) -> None:
        await self.client.raw_insert(
            table, list(columns), insert_block=json_rows, fmt="JSONEachRow", settings=dict(settings)
        )

    async def close(self) -> None:
        await self.client.close()


class ClickHouseUnavailable(RuntimeError):
    """The ClickHouse server named by NOVA_CLICKHOUSE_URL did not answer at start."""


def check_url(url: str) -> str:
    """NOVA_CLICKHOUSE_URL as clickhouse-connect reads it: http(s)://user:password@host:8123
    (or clickhouse://…); the database is NOVA_CLICKHOUSE_DATABASE's, not the URL's path."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES or not parts.hostname:
        # Shown without the value: the URL may hold a password.
        raise ConfigError(
            "NOVA_CLICKHOUSE_URL must look like http://user:password@host:8123 "
            f"(scheme one of {', '.join(_SCHEMES)}); unset, the embedded chdb engine runs "
            "in NOVA_DATA_DIR"
        )
    return url


@contextlib.asynccontextmanager
async def open_clickhouse(
    url: str | None, chdb_path: Path, database: str
) -> AsyncIterator[ClickHouse]:
    """The server at `url`, else chdb in `chdb_path`; `database` (a lowercase
    identifier, which statements name in full) is created if missing."""
    if not _IDENTIFIER.fullmatch(database):
        raise ConfigError(f"NOVA_CLICKHOUSE_DATABASE {database!r} must be a lowercase identifier")
    engine: ClickHouse
    if url is not None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import Error

        try:
            client = await clickhouse_connect.get_async_client(dsn=url)
        except Error as error:
            # The host, never the URL: it may hold a password.
            parts = urlsplit(url)
            raise ClickHouseUnavailable(
                f"cannot reach the ClickHouse server of NOVA_CLICKHOUSE_URL "
                f"({parts.hostname}:{parts.port or 'default port'}): {error}"
            ) from None
        engine = _Server(client, database)
    else:
        engine = await asyncio.to_thread(_open_chdb, chdb_path, database)
    try:
        await engine.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        yield engine
    finally:
        await engine.close()


def _open_chdb(path: Path, database: str) -> _Chdb:
    import clickhouse_connect

    path.mkdir(parents=True, exist_ok=True)
    return _Chdb(clickhouse_connect.get_client(interface="chdb", path=str(path)), database)
