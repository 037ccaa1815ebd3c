"""What a service or a consumer group declares about itself (its SPEC), what the runtime
hands it, and the registry of them all that a build runs.

Everything that lists services is read from the registry: ports and addresses
(NOVA_<NAME>_PORT, NOVA_<NAME>_ADDRESS), schemas and migrations, the outboxes the relay
reads, the event topics, the gateway's stubs and the `nova up` banner. So adding a service
is its folder plus one line in services/registry.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio
from redis.asyncio import Redis

from services.runtime.auth import TokenCodec
from services.runtime.clickhouse import ClickHouse
from services.runtime.config import Config
from services.runtime.db import Database
from services.runtime.events.model import Transport, topic_for
from services.runtime.tenancy.directory import TenantDirectory

_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Dependencies:
    """Everything a service may use, built once per process by services.runtime.process."""

    config: Config
    db: Database
    tokens: TokenCodec
    redis: Redis | None = None
    """A client of the process's Redis, when it asked for one (ServiceSpec.uses_redis)."""
    clickhouse: ClickHouse | None = None
    """The process's ClickHouse (chdb or a server), when a service asked for it
    (ServiceSpec.clickhouse_migrations)."""
    tenants: TenantDirectory = field(default_factory=lambda: TenantDirectory(None))
    """The tenant registry as the servers read it (cached); without one, only the default
    tenant."""


class Runs(Protocol):
    async def run(self, stop: asyncio.Event) -> None:
        """Consumes until `stop` is set."""


@dataclass(frozen=True)
class ConsumerContext:
    """What a consumer group is built from, in the process that runs it."""

    transport: Transport
    db: Database
    """Where its processed-event ids and PostgreSQL effects live."""
    topics: Sequence[str]
    """What it subscribes to: every topic of the registry."""
    config: Config
    redis: Redis | None = None
    """The process's Redis, for groups whose SPEC says uses_redis."""


Closer = Callable[[], Awaitable[None]]
"""Waits for a service's background work at shutdown; cancelled past the grace period."""


@dataclass(frozen=True)
class ConsumerSpec:
    """A consumer group this build can run: where its effects live and how to build it."""

    group: str
    schema: str
    """The schema of its effects (migrated with the services)."""
    migrations: Path
    build: Callable[[ConsumerContext], Runs]
    uses_redis: bool = False
    """Its effects (or some) are in Redis: the process running it opens Redis."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    """Short name used in config and on the command line, e.g. "user"."""
    service: ServiceDescriptor
    """The proto service it serves (reflection, health, clients' retry rules)."""
    stub: Callable[[aio.Channel], Any]
    """The generated stub class of that service, for clients of it (the gateway)."""
    default_port: int
    schema: str
    """The PostgreSQL schema this service owns."""
    migrations: Path
    add_to_server: Callable[[aio.Server, Dependencies], Closer | None]
    """Adds its servicer; may return what finishes its background work (a timeline
    rebuild, a cache refresh) once the server takes no more calls."""
    aggregate_types: tuple[str, ...] = ()
    """The aggregates whose events it writes to its outbox, one topic each
    (nova.<aggregate>.v1); a service with none has no outbox."""
    consumers: tuple[ConsumerSpec, ...] = ()
    """Consumer groups it owns, run beside the registry's own."""
    uses_redis: bool = False
    """`nova serve <name>` opens Redis (Dependencies.redis) for it; `nova up` always does."""
    admin: bool = False
    """Its callers are admins (admin tokens, not users'), acting in no tenant."""
    clickhouse_migrations: Path | None = None
    """Its ClickHouse schema: the process serving it opens ClickHouse
    (Dependencies.clickhouse) and applies these before it serves."""

    @property
    def full_name(self) -> str:
        """The proto service's full name, e.g. "nova.user.v1.UserService"."""
        return self.service.full_name


@dataclass(frozen=True)
class Registry:
    """The services and consumer groups of a build; make it with Registry.of."""

    services: Mapping[str, ServiceSpec]
    consumers: Mapping[str, ConsumerSpec]

    @classmethod
    def of(
        cls, services: Sequence[ServiceSpec], consumers: Sequence[ConsumerSpec] = ()
    ) -> Registry:
        """Checks that names, ports, schemas and aggregate types are unique, so two
        services never share a port, a schema or a topic. A service's own consumer groups
        may keep their effects in its schema (the feed's projections); the registry's
        other groups have schemas of their own."""
        owned = [group for spec in services for group in spec.consumers]
        # A service's group passed again (Registry.of(services, registry.consumers)) is
        # the same group, not a second one.
        consumers = [group for group in consumers if group not in owned]
        groups = [*consumers, *owned]
        checked: tuple[tuple[str, list[object]], ...] = (
            ("service name", [spec.name for spec in services]),
            ("default port", [spec.default_port for spec in services]),
            ("schema", [*(spec.schema for spec in services), *(g.schema for g in consumers)]),
            ("aggregate type", [kind for spec in services for kind in spec.aggregate_types]),
            ("consumer group", [group.group for group in groups]),
        )
        for what, values in checked:
            repeated = sorted({str(value) for value in values if values.count(value) > 1})
            if repeated:
                raise ValueError(f"two registered specs share a {what}: {', '.join(repeated)}")
        for spec in services:
            for name in (spec.name, *spec.aggregate_types):
                if not _NAME.fullmatch(name):
                    raise ValueError(f"{name!r} must be a lowercase identifier ({spec.name})")
        return cls(
            services={spec.name: spec for spec in services},
            consumers={group.group: group for group in groups},
        )

    @property
    def default_ports(self) -> dict[str, int]:
        return {name: spec.default_port for name, spec in self.services.items()}

    @property
    def topics(self) -> tuple[str, ...]:
        """Every event topic: one per aggregate type of every service."""
        return tuple(
            topic_for(kind) for spec in self.services.values() for kind in spec.aggregate_types
        )

    @property
    def outbox_schemas(self) -> list[str]:
        """The schemas with an outbox, which the relay publishes."""
        return [spec.schema for spec in self.services.values() if spec.aggregate_types]
