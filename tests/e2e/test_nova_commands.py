"""The `nova` command's own behaviour: migrate, and clear errors for bad configuration."""

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import fresh_database

NOVA = str(Path(sys.executable).parent / "nova")


@pytest.fixture
async def empty_database(server_url: str) -> AsyncIterator[str]:
    async with fresh_database(server_url, "nova_cli") as url:
        yield url


def _nova(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    return subprocess.run(
        [NOVA, *args], env=clean | env, capture_output=True, text=True, timeout=120
    )


def test_migrate_applies_once_then_reports_up_to_date(empty_database: str) -> None:
    first = _nova("migrate", NOVA_DATABASE_URL=empty_database)
    assert first.returncode == 0, first.stderr
    assert "user: 0001_create_users.sql" in first.stdout
    again = _nova("migrate", NOVA_DATABASE_URL=empty_database)
    assert again.returncode == 0, again.stderr
    assert "user: up to date" in again.stdout


def test_a_bad_variable_stops_the_command_with_its_name() -> None:
    result = _nova("migrate", NOVA_USER_PORT="fifty")
    assert result.returncode != 0
    assert "NOVA_USER_PORT must be a whole number from 0 to 65535; got 'fifty'" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_service_is_named_with_the_choices() -> None:
    result = _nova("serve", "billing")
    assert result.returncode == 2
    assert "'billing' is not one of" in result.stderr


def test_serve_needs_a_signing_key_and_says_how_to_make_one(
    empty_database: str, tmp_path: Path
) -> None:
    """`nova serve` is production: it never falls back to a development key of its own."""
    result = _nova("serve", "user", NOVA_DATABASE_URL=empty_database, NOVA_DATA_DIR=str(tmp_path))
    assert result.returncode == 1
    assert "configuration: NOVA_AUTH_SECRET is not set" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "auth-secret").exists()


def test_serve_gateway_is_in_production_mode_unless_told_otherwise() -> None:
    from services.cli.gateway import gateway_settings
    from services.runtime.env import EnvReader

    assert gateway_settings(EnvReader({}), mode="production").production
    assert not gateway_settings(EnvReader({}), mode="production").introspection_enabled
    assert not gateway_settings(EnvReader({}), mode="development").production
    told = EnvReader({"NOVA_GATEWAY_MODE": "development"})
    assert not gateway_settings(told, mode="production").production
