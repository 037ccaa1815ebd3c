"""What every `nova` command shares: the configuration and how a command's coroutine runs."""

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

import asyncpg
import click
import uvloop

from services.registry import REGISTRY
from services.runtime.config import Config, ConfigError
from services.runtime.embedded_redis import EmbeddedRedisError
from services.runtime.events.model import TransportError
from services.runtime.migrations import MigrationError


def load_config() -> Config:
    """The configuration from NOVA_* variables, for the registered services."""
    try:
        return Config.from_env(default_ports=REGISTRY.default_ports)
    except ConfigError as error:
        raise click.ClickException(f"configuration: {error}") from None


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Runs on uvloop, turning the failures people cause into one-line errors.

    SIGTERM cancels the command, so its context managers (servers, subprocesses, pools)
    close as they would on Ctrl-C; `up` and `serve` replace this with a graceful drain.
    """

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await coroutine

    try:
        uvloop.run(main())
    except asyncio.CancelledError:
        raise SystemExit(128 + signal.SIGTERM) from None
    except ConfigError as error:
        raise click.ClickException(f"configuration: {error}") from None
    except (MigrationError, TransportError, EmbeddedRedisError, OSError) as error:
        # OSError: a port in use (servers and the gateway say which setting to change).
        raise click.ClickException(str(error)) from None
    except asyncpg.PostgresError as error:
        raise click.ClickException(f"database: {error}") from None
