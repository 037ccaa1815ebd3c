"""Running a `./dev bench` scenario from a test: as a subprocess on a database of its own,
with none of this environment's NOVA_* settings, and reading its tables' rows."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPOSITORY = Path(__file__).parents[1]


async def run_bench(
    scenario: str, arguments: Sequence[str], *, database_url: str, data_dir: Path, seconds: float
) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("NOVA_") and key.lower() not in ("http_proxy", "https_proxy")
    }
    env |= {"NOVA_DATA_DIR": str(data_dir), "NOVA_DATABASE_URL": database_url}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tests.bench", scenario, *arguments],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds,
    )


def table_cells(stdout: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first`."""
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│┃").split("│")]
        if cells and cells[0] == first:
            return cells[1:]
    raise AssertionError(f"no row {first!r} in:\n{stdout}")
