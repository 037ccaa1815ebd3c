"""A read-through cache in Redis in front of PostgreSQL (cache-aside), for values read far
more often than they change.

A miss loads from the database once per key and process (single_flight.py: a caller whose
deadline passes stops waiting without failing the others), stores the value for
`CacheSettings.ttl_seconds`, and ids the loader does not know for the shorter
`negative_ttl_seconds`, so asking again and again for a missing id costs no query each time.
Owners forget entries when the data changes (the writer after its commit, and a consumer
of the change events); the TTL only bounds what a lost invalidation leaves stale.

A store never puts back what a writer forgot. Forgetting deletes the entry and counts a
write in a mark beside it (`…}:w`, the same hash tag, so the same Cluster slot); a reader
reads the mark with the entry and stores only if the mark has not moved since (one
script). Without it, a reader that loaded the old row just before the writer's commit
and stored it just after the writer's delete would put the old value back for a whole
TTL (a deleted post shown again for a day). The mark lives WRITE_MARK_SECONDS, longer than
any load (the database's command timeout is 30 s).

Expiry without a stampede: each entry carries how long its load took (delta) and when it
expires. A read refreshes it early, in the background, with a probability that rises as
expiry nears: when ``now - delta * beta * ln(u) >= expiry`` for u uniform in (0, 1]
(XFetch, Vattani et al., "Optimal Probabilistic Cache Stampede Prevention", VLDB 2015).
One reader, usually, reloads a hot key shortly before it would expire, instead of every
reader at once after.

Redis is a cache here, never a dependency: when it fails or takes longer than
`timeout_seconds`, the read goes to the loader and the failure is counted
(`nova.cache.bypassed{cache,operation}`), never raised.

Keys are ``nova:cache:<name>:v<version>:{<tenant>:<id>}``: tenant-scoped, and the hash tag
keeps an id's entry in one Redis Cluster slot with the other per-user keys (the feed's
``nova:feed:{<tenant>:<user>}:…``). A batch read is one MGET, which on a cluster must
become one per slot.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Generic, Protocol, TypeVar

import structlog
from opentelemetry import metrics
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.runtime.cache_settings import CacheSettings
from services.runtime.single_flight import SingleFlight

V = TypeVar("V")
T = TypeVar("T")

_log = structlog.get_logger("nova.cache")

MAX_BATCH = 1000
"""Ids one get_many may ask for (one MGET and one batch load)."""
BETA = 1.0
"""XFetch's beta: above 1 refreshes earlier, below later; 1 is the paper's optimum."""

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_MAX_ID_LENGTH = 200
_HEADER = struct.Struct("<Bdf")
"""kind, expiry (Unix seconds), delta (seconds the load took): 13 bytes before the value."""
_VALUE, _MISSING = 1, 2
WRITE_MARK_SECONDS = 35
"""How long a write's mark stops stores of what was read before it: longer than any load."""
_STORE = """
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
"""Sets the entry unless a write was marked since the reader read the mark (ARGV[3])."""
_FORGET = """
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
"""
_FAILURES = (RedisError, OSError, TimeoutError)
_LOG_EVERY_SECONDS = 10.0


class Codec(Protocol[T]):
    """How a value becomes the bytes Redis keeps, and back."""

    def encode(self, value: T) -> bytes: ...

    def decode(self, data: bytes) -> T: ...


@dataclass
class CacheStats:
    """What one Cache did since it was made (tests and benches read it; the meter gets the
    same as counters)."""

    hits: int = 0
    negative_hits: int = 0
    """Reads answered "no such id" from the cache."""
    misses: int = 0
    loads: int = 0
    """Loader calls, batch loads counted once."""
    early_refreshes: int = 0
    bypassed: int = 0


async def forget_key(redis: Redis, key: str) -> None:
    """Forgets one entry (`cache_key`'s) and marks the write: what an invalidating
    consumer does; a failure raises, so the event is retried."""
    forget = redis.register_script(_FORGET)
    await forget(keys=[key, _mark(key)], args=[WRITE_MARK_SECONDS * 1000])


def _mark(key: str) -> str:
    return f"{key}:w"


def _bytes(raw: object) -> bytes | None:
    return raw if isinstance(raw, bytes) else None


def cache_key(name: str, tenant_id: uuid.UUID, item_id: str, version: int = 1) -> str:
    """The Redis key of one entry; what an invalidating consumer deletes."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"cache name {name!r} must be a lowercase identifier")
    if not isinstance(tenant_id, uuid.UUID):
        raise ValueError(f"tenant_id must be a UUID, got {tenant_id!r}")
    if not isinstance(item_id, str) or not 0 < len(item_id) <= _MAX_ID_LENGTH:
        raise ValueError(f"a cached id is 1 to {_MAX_ID_LENGTH} characters, got {item_id!r:.60}")
    if "{" in item_id or "}" in item_id:
        raise ValueError(f"a cached id may not contain braces (the hash tag), got {item_id!r:.60}")
    return f"nova:cache:{name}:v{version}:{{{tenant_id}:{item_id}}}"


class Cache(Generic[V]):
    """``prefs = await cache.get(tenant, str(user_id), lambda: repository.load(user_id))``;
    the loader returns None for an id it does not know (cached as missing).

    `random` gives XFetch's u in (0, 1] and `clock` the time in seconds (the entry's
    expiry and its load's duration): both injectable, so a test decides when an early
    refresh happens.
    """

    def __init__(
        self,
        name: str,
        redis: Redis,
        codec: Codec[V],
        settings: CacheSettings | None = None,
        *,
        version: int = 1,
        random_source: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.time,
        meter: metrics.Meter | None = None,
    ) -> None:
        settings = settings if settings is not None else CacheSettings()
        cache_key(name, uuid.UUID(int=0), "x", version)  # checks the name
        if settings.ttl_seconds <= 0 or settings.negative_ttl_seconds <= 0:
            raise ValueError("a cache's TTLs must be positive")
        if settings.timeout_seconds <= 0:
            raise ValueError("a cache's Redis timeout must be positive")
        self.name = name
        self.stats = CacheStats()
        self._redis = redis
        self._codec = codec
        self._settings = settings
        self._version = version
        self._random = random_source if random_source is not None else _uniform
        self._clock = clock
        self._flights: SingleFlight[str, V | None] = SingleFlight()
        self._store = redis.register_script(_STORE)
        self._background: set[asyncio.Task[object]] = set()
        self._last_logged = -math.inf
        meter = meter if meter is not None else metrics.get_meter("nova.cache")
        self._reads = meter.create_counter(
            "nova.cache.reads",
            unit="{read}",
            description="Cache reads by cache and result (hit, negative_hit, miss).",
        )
        self._bypassed = meter.create_counter(
            "nova.cache.bypassed",
            unit="{operation}",
            description="Cache operations that failed or timed out in Redis; reads went "
            "to the database instead.",
        )

    def key(self, tenant_id: uuid.UUID, item_id: str) -> str:
        return cache_key(self.name, tenant_id, item_id, self._version)

    async def get(
        self, tenant_id: uuid.UUID, item_id: str, load: Callable[[], Awaitable[V | None]]
    ) -> V | None:
        """The value of `item_id` (None: the loader does not know it), from Redis when it
        is there, else from one load shared by every concurrent caller of this process."""
        key = self.key(tenant_id, item_id)
        try:
            raw, mark = await self._bounded(self._redis.mget(key, _mark(key)))
        except _FAILURES as error:
            self._bypass("read", error)
            return await self._flights.run(key, load)
        entry = self._decode(raw)
        store = partial(self._load_and_store, key, load, _bytes(mark))
        if entry is None:
            self._count("miss")
            return await self._flights.run(key, store)
        found, expiry, delta = entry
        if self._due_early(expiry, delta) and not self._flights.in_flight(key):
            self.stats.early_refreshes += 1
            self._in_background(self._flights.run(key, store))
        self._count("hit" if found is not None else "negative_hit")
        return found[0] if found is not None else None

    async def get_many(
        self,
        tenant_id: uuid.UUID,
        item_ids: Sequence[str],
        load_many: Callable[[Sequence[str]], Awaitable[Mapping[str, V]]],
    ) -> dict[str, V]:
        """The values of the ids that exist, in the order asked: one MGET, then one call of
        `load_many` with the ids Redis did not have (ids it leaves out are cached as
        missing). Batch loads are not shared between concurrent callers."""
        ids = list(dict.fromkeys(item_ids))
        if len(ids) > MAX_BATCH:
            raise ValueError(f"get_many takes at most {MAX_BATCH} ids, got {len(ids)}")
        keys = [self.key(tenant_id, item_id) for item_id in ids]
        if not ids:
            return {}
        try:
            read = await self._bounded(
                self._redis.mget([k for key in keys for k in (key, _mark(key))])
            )
        except _FAILURES as error:
            self._bypass("read", error)
            self.stats.loads += 1
            loaded = await load_many(ids)
            return {item_id: loaded[item_id] for item_id in ids if item_id in loaded}
        raws = read[0::2]
        marks = {item_id: _bytes(m) for item_id, m in zip(ids, read[1::2], strict=True)}
        found: dict[str, V] = {}
        missing: list[str] = []
        early: list[str] = []
        for item_id, raw in zip(ids, raws, strict=True):
            entry = self._decode(raw)
            if entry is None:
                self._count("miss")
                missing.append(item_id)
                continue
            value, expiry, delta = entry
            if self._due_early(expiry, delta):
                early.append(item_id)
            self._count("hit" if value is not None else "negative_hit")
            if value is not None:
                found[item_id] = value[0]
        if early:
            self.stats.early_refreshes += len(early)
            self._in_background(self._load_many_and_store(tenant_id, early, load_many, marks))
        if missing:
            found |= await self._load_many_and_store(tenant_id, missing, load_many, marks)
        return {item_id: found[item_id] for item_id in ids if item_id in found}

    async def forget(self, tenant_id: uuid.UUID, item_id: str) -> None:
        """Deletes the entry and marks the write, best effort (a failure is counted and
        logged, not raised): what a writer does right after its commit, before the event
        path does it again."""
        try:
            await self._bounded(forget_key(self._redis, self.key(tenant_id, item_id)))
        except _FAILURES as error:
            self._bypass("delete", error)

    async def settled(self) -> None:
        """Waits for the early refreshes running in the background."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _load_and_store(
        self, key: str, load: Callable[[], Awaitable[V | None]], mark: bytes | None
    ) -> V | None:
        """Loads, then stores unless the write mark moved from `mark` (read before)."""
        started = self._clock()
        value = await load()
        delta = self._clock() - started
        self.stats.loads += 1
        try:
            await self._bounded(
                self._store(
                    keys=[key, _mark(key)],
                    args=[self._entry(value, delta), self._ttl_ms(value), mark or b""],
                )
            )
        except _FAILURES as error:
            self._bypass("write", error)
        return value

    async def _load_many_and_store(
        self,
        tenant_id: uuid.UUID,
        ids: Sequence[str],
        load_many: Callable[[Sequence[str]], Awaitable[Mapping[str, V]]],
        marks: Mapping[str, bytes | None],
    ) -> dict[str, V]:
        started = self._clock()
        loaded = await load_many(ids)
        delta = self._clock() - started
        self.stats.loads += 1
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for item_id in ids:
                    value = loaded.get(item_id)
                    key = self.key(tenant_id, item_id)
                    # One script per id: each may live in a Cluster slot of its own.
                    await self._store(
                        keys=[key, _mark(key)],
                        args=[
                            self._entry(value, delta),
                            self._ttl_ms(value),
                            marks[item_id] or b"",
                        ],
                        client=pipe,
                    )
                await self._bounded(pipe.execute())
        except _FAILURES as error:
            self._bypass("write", error)
        return {item_id: loaded[item_id] for item_id in ids if item_id in loaded}

    def _entry(self, value: V | None, delta: float) -> bytes:
        ttl = self._ttl_ms(value) / 1000
        kind, payload = (_MISSING, b"") if value is None else (_VALUE, self._codec.encode(value))
        return _HEADER.pack(kind, self._clock() + ttl, max(delta, 0.0)) + payload

    def _ttl_ms(self, value: V | None) -> int:
        settings = self._settings
        return 1000 * (settings.ttl_seconds if value is not None else settings.negative_ttl_seconds)

    def _decode(self, raw: object) -> tuple[tuple[V] | None, float, float] | None:
        """(the value in a 1-tuple, or None for "missing"; expiry; delta), or None when
        there is no entry or it cannot be read (another version's bytes: a miss)."""
        if not isinstance(raw, bytes) or len(raw) < _HEADER.size:
            return None
        kind, expiry, delta = _HEADER.unpack_from(raw)
        if kind == _MISSING:
            return None, expiry, delta
        if kind != _VALUE:
            return None
        try:
            return (self._codec.decode(raw[_HEADER.size :]),), expiry, delta
        except (ValueError, TypeError, KeyError):
            return None

    def _due_early(self, expiry: float, delta: float) -> bool:
        u = self._random()
        if not 0 < u <= 1:
            raise ValueError(f"the cache's random source must give a number in (0, 1], got {u}")
        return self._clock() - delta * BETA * math.log(u) >= expiry

    async def _bounded(self, call: Awaitable[T]) -> T:
        return await asyncio.wait_for(call, self._settings.timeout_seconds)

    def _count(self, result: str) -> None:
        if result == "hit":
            self.stats.hits += 1
        elif result == "negative_hit":
            self.stats.negative_hits += 1
        else:
            self.stats.misses += 1
        self._reads.add(1, {"cache": self.name, "result": result})

    def _bypass(self, operation: str, error: BaseException) -> None:
        self.stats.bypassed += 1
        self._bypassed.add(1, {"cache": self.name, "operation": operation})
        now = time.monotonic()
        if now - self._last_logged >= _LOG_EVERY_SECONDS:  # one line per outage, not per read
            self._last_logged = now
            _log.warning(
                "redis failed; cache bypassed",
                cache=self.name,
                operation=operation,
                error=f"{type(error).__name__}: {error}",
            )

    def _in_background(self, work: Awaitable[object]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[object]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            _log.warning("early cache refresh failed", cache=self.name, error=str(error))


def _uniform() -> float:
    return 1.0 - random.random()  # (0, 1]: ln(u) is defined
