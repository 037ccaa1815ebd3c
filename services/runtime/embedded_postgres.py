"""A real PostgreSQL from the pgserver wheel, for `nova up` with no NOVA_DATABASE_URL."""

import asyncio
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any


@asynccontextmanager
async def embedded_postgres(data_dir: Path) -> AsyncIterator[str]:
    """Starts (or joins) the server in data_dir/postgres and yields its DSN; it listens on a
    Unix socket only, so it never clashes with a PostgreSQL already on port 5432."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); harmless here.
        warnings.simplefilter("ignore")
        import pgserver

    directory = data_dir / "postgres"
    directory.mkdir(parents=True, exist_ok=True)

    def start() -> Any:  # pgserver.PostgresServer; pgserver has no type hints
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pgserver.get_server(directory, cleanup_mode="stop")  # type: ignore[attr-defined]

    server = await asyncio.to_thread(start)
    try:
        yield server.get_uri()
    finally:
        await asyncio.to_thread(server.cleanup)
