"""The gateway as the `nova` command runs it: its NOVA_GATEWAY_* settings and its targets.

Read here, not by the gateway itself, which knows only its settings object and the
services it is handed (one target per registered service).
"""

import os
from collections.abc import Mapping

import click

from gateway.admission import AdmissionSettings
from gateway.clients import Target
from gateway.settings import GatewaySettings
from services.runtime.env import ConfigError, EnvReader
from services.runtime.spec import Registry


def gateway_settings(read: EnvReader, *, mode: str = "production") -> GatewaySettings:
    """`mode` is the default of NOVA_GATEWAY_MODE: "development" (GraphiQL, introspection,
    stack traces in errors) only for `nova up`; `nova serve gateway` is production."""
    production = read.choice("NOVA_GATEWAY_MODE", mode, ("development", "production"))
    return GatewaySettings(
        port=read.number("NOVA_GATEWAY_PORT", 8080, 0, 65535),
        production=production == "production",
        introspection=read.optional_flag("NOVA_GATEWAY_INTROSPECTION"),
        request_timeout_seconds=read.seconds_from_ms(
            "NOVA_GATEWAY_REQUEST_TIMEOUT_MS", 10_000, 1, 600_000
        ),
        max_body_bytes=read.number("NOVA_GATEWAY_MAX_BODY_BYTES", 1_048_576, 1, 100_000_000),
        max_query_length=read.number("NOVA_GATEWAY_MAX_QUERY_LENGTH", 20_000, 1, 1_000_000),
        max_tokens=read.number("NOVA_GATEWAY_MAX_TOKENS", 1000, 1, 1_000_000),
        max_operations=read.number("NOVA_GATEWAY_MAX_OPERATIONS", 10, 1, 1000),
        max_fragments=read.number("NOVA_GATEWAY_MAX_FRAGMENTS", 100, 1, 10_000),
        max_variables_depth=read.number("NOVA_GATEWAY_MAX_VARIABLES_DEPTH", 10, 1, 100),
        max_variable_values=read.number("NOVA_GATEWAY_MAX_VARIABLE_VALUES", 1100, 1, 1_000_000),
        max_depth=read.number("NOVA_GATEWAY_MAX_DEPTH", 10, 1, 100),
        max_aliases=read.number("NOVA_GATEWAY_MAX_ALIASES", 30, 1, 10_000),
        max_cost=read.number("NOVA_GATEWAY_MAX_COST", 2000, 1, 10_000_000),
        max_page_size=read.number("NOVA_GATEWAY_MAX_PAGE_SIZE", 100, 1, 100),
        document_cache_size=read.number("NOVA_GATEWAY_DOCUMENT_CACHE_SIZE", 1000, 0, 1_000_000),
        document_cache_bytes=read.number("NOVA_GATEWAY_DOCUMENT_CACHE_BYTES", 16 * 2**20, 0, 2**34),
        persisted_query_cache_size=read.number(
            "NOVA_GATEWAY_APQ_CACHE_SIZE", 10_000, 0, 10_000_000
        ),
        persisted_query_cache_bytes=read.number(
            "NOVA_GATEWAY_APQ_CACHE_BYTES", 16 * 2**20, 0, 2**34
        ),
        persisted_query_registrations_per_second=read.number(
            "NOVA_GATEWAY_APQ_REGISTRATIONS_PER_SECOND", 10, 1, 100_000
        ),
        persisted_query_registration_burst=read.number(
            "NOVA_GATEWAY_APQ_REGISTRATION_BURST", 50, 1, 1_000_000
        ),
        safelist=read.existing_file("NOVA_GATEWAY_SAFELIST"),
        admission=AdmissionSettings(
            max_in_flight=read.number("NOVA_GATEWAY_MAX_IN_FLIGHT", 16, 1, 100_000),
            max_queued=read.number("NOVA_GATEWAY_MAX_QUEUED", 64, 0, 1_000_000),
            queue_timeout_seconds=read.seconds_from_ms(
                "NOVA_GATEWAY_QUEUE_TIMEOUT_MS", 50, 0, 60_000
            ),
        ),
    )


MAX_GATEWAY_WORKERS = 64


def gateway_workers(read: EnvReader) -> int:
    """NOVA_GATEWAY_WORKERS: gateway processes sharing its port (`--workers` wins)."""
    return read.number("NOVA_GATEWAY_WORKERS", 1, 1, MAX_GATEWAY_WORKERS)


def load_gateway_workers() -> int:
    try:
        return gateway_workers(EnvReader(os.environ))
    except ConfigError as error:
        raise click.ClickException(f"configuration: {error}") from None


def gateway_targets(registry: Registry, addresses: Mapping[str, str]) -> dict[str, Target]:
    """Every registered service but the admin ones, at its address, as a target of the
    gateway's clients (the gateway serves users; tenants are managed over gRPC)."""
    return {
        name: Target(addresses[name], spec.service, spec.stub)
        for name, spec in registry.services.items()
        if not spec.admin
    }


def load_gateway_settings(*, mode: str) -> GatewaySettings:
    """The gateway's settings from NOVA_GATEWAY_* variables (`mode`: NOVA_GATEWAY_MODE's
    default)."""
    try:
        return gateway_settings(EnvReader(os.environ), mode=mode)
    except ConfigError as error:
        raise click.ClickException(f"configuration: {error}") from None
