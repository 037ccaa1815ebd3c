"""The read caches' settings (NOVA_CACHE_*), read with the rest of the configuration so a
bad value stops the start, not the first read."""

from dataclasses import dataclass

from services.runtime.env import EnvReader


@dataclass(frozen=True)
class CacheSettings:
    enabled: bool = True
    """Off: every read goes to PostgreSQL (the invalidating consumer still runs, so
    turning it on again serves nothing a change has invalidated meanwhile)."""
    ttl_seconds: int = 24 * 3600
    """How long a cached value lives; events delete it sooner when it changes, so the TTL
    only bounds what a lost invalidation can leave stale."""
    negative_ttl_seconds: int = 60
    """How long "no such id" is remembered: short, since the id may be created next."""
    timeout_seconds: float = 0.1
    """The longest a cache read or write may take before the caller goes to PostgreSQL:
    a slow cache must cost little more than no cache."""


def cache_settings(read: EnvReader) -> CacheSettings:
    return CacheSettings(
        enabled=read.flag("NOVA_CACHE", True),
        ttl_seconds=read.number("NOVA_CACHE_TTL_HOURS", 24, 1, 24 * 30) * 3600,
        negative_ttl_seconds=read.number("NOVA_CACHE_NEGATIVE_TTL_SECONDS", 60, 1, 86_400),
        timeout_seconds=read.seconds_from_ms("NOVA_CACHE_TIMEOUT_MS", 100, 1, 10_000),
    )
