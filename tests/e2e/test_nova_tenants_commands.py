"""`nova tenants …` as an operator runs it, against a database of its own: create, list,
set and lift quotas, delete, admin tokens the tenant service accepts, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from services.runtime.auth import TokenCodec
from tests.conftest import fresh_database

NOVA = str(Path(sys.executable).parent / "nova")
SECRET = "tenants-cli-test-signing-key-0123456789abcdef"


@pytest.fixture(scope="module")
async def database(server_url: str) -> AsyncIterator[str]:
    async with fresh_database(server_url, "nova_tenants_cli") as url:
        yield url


def _nova(*args: str, database: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    env |= {
        "NOVA_DATABASE_URL": database,
        "NOVA_DATA_DIR": str(data_dir),
        "NOVA_AUTH_SECRET": SECRET,
        "NOVA_LOG_LEVEL": "WARNING",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [NOVA, "tenants", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_an_operator_creates_limits_lists_and_deletes_a_tenant(
    database: str, tmp_path: Path
) -> None:
    created = _nova("create", "acme", "--name", "Acme Corp", database=database, data_dir=tmp_path)
    assert created.returncode == 0, created.stderr
    acme = json.loads(created.stdout)
    assert (acme["slug"], acme["name"], acme["quotas"]) == ("acme", "Acme Corp", {})

    limited = _nova(
        "quota", "acme", "--requests-per-second", "100", "--max-posts", "5",
        database=database, data_dir=tmp_path,
    )  # fmt: skip
    assert json.loads(limited.stdout)["quotas"] == {"requests_per_second": 100.0, "max_posts": 5}
    lifted = _nova("quota", "acme", "--max-posts", "none", database=database, data_dir=tmp_path)
    assert json.loads(lifted.stdout)["quotas"] == {"requests_per_second": 100.0}

    listed = _nova("list", database=database, data_dir=tmp_path)
    slugs = [json.loads(line)["slug"] for line in listed.stdout.splitlines()]
    assert slugs == ["default", "acme"]

    again = _nova("create", "acme", database=database, data_dir=tmp_path)
    assert again.returncode == 1
    assert "a tenant 'acme' exists already" in again.stderr
    unconfirmed = _nova("delete", "acme", database=database, data_dir=tmp_path)
    assert unconfirmed.returncode == 2
    assert "add --yes" in unconfirmed.stderr
    deleted = _nova("delete", "acme", "--yes", database=database, data_dir=tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    assert acme["id"] in deleted.stdout
    listed = _nova("list", database=database, data_dir=tmp_path)
    assert [json.loads(line)["slug"] for line in listed.stdout.splitlines()] == ["default"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "Not A Slug"), "is not a tenant slug"),
        (("quota", "default"), "name at least one quota"),
        (("quota", "default", "--burst", "x"), "'x' is not a number"),
        (("quota", "default", "--burst", "0"), "burst must be at least 1"),
        (("quota", "nobody", "--burst", "2"), "there is no tenant 'nobody'"),
        (("delete", "default", "--yes"), "the default tenant cannot be deleted"),
    ],
)
def test_bad_input_gets_a_one_line_error(
    database: str, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    done = _nova(*args, database=database, data_dir=tmp_path)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_an_admin_token_is_one_the_tenant_service_accepts(tmp_path: Path) -> None:
    done = _nova("admin-token", "--name", "ops", "--hours", "2", database="", data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    codec = TokenCodec(secret=SECRET, ttl=timedelta(hours=1))
    assert codec.verify_admin(done.stdout.strip()).subject == "admin:ops"
    too_long = _nova("admin-token", "--hours", "10000", database="", data_dir=tmp_path)
    assert too_long.returncode == 2
