"""What a service package declares about itself, and what the runtime hands it."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grpc import aio

from services.runtime.auth import TokenCodec
from services.runtime.config import Config
from services.runtime.db import Database


@dataclass(frozen=True)
class Dependencies:
    """Everything a service may use, built once per process by services.runtime.app."""

    config: Config
    db: Database
    tokens: TokenCodec


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    """Short name used in config and on the command line, e.g. "user"."""
    full_name: str
    """The proto service, e.g. "nova.user.v1.UserService" (reflection, health)."""
    schema: str
    """The PostgreSQL schema this service owns."""
    migrations: Path
    add_to_server: Callable[[aio.Server, Dependencies], None]
