"""Password hashing with argon2id, off the event loop, on a bounded pool.

Hashing costs tens of milliseconds of CPU (and, by default, 64 MiB) by design, so it runs
in worker threads (argon2-cffi releases the GIL): `concurrency` at once, at most `queue`
more waiting; past that a sign-in is refused at once ("too many sign-ins in progress"),
never queued without end. A slot is held until its hash has finished, not until its
caller stops waiting: a caller that hangs up cannot free a slot whose thread still works.

That refusal is marked as one method's (`nova-refusal: method`), so clients' circuit
breakers do not count it: anyone can fill the pool from enough addresses, and a breaker it
opened would refuse every other method of the service too, for everyone.

"insecure-fast" exists for tests and benchmarks that create many users; it is named so
that nobody ships it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import Parameters, PasswordHasher, extract_parameters, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.low_level import ARGON2_VERSION

from services.runtime.errors import Refused

T = TypeVar("T")

_PROFILES = {
    "rfc9106-low-memory": profiles.RFC_9106_LOW_MEMORY,
    "insecure-fast": profiles.CHEAPEST,
}

BUSY_RETRY_SECONDS = 1.0
"""The retry hint of a refusal: about what a queue of hashes takes to drain."""


class Passwords:
    def __init__(self, hasher: PasswordHasher, *, concurrency: int, queue: int) -> None:
        self._hasher = hasher
        self._limit = concurrency + queue
        self._admitted = 0
        self._lock = threading.Lock()
        """Guards _admitted: hashes finish (and give their slot back) in worker threads."""
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="nova-argon2")
        # Verified against when the login is unknown, so response time does not reveal
        # which handles and e-mails have accounts.
        self._decoy = hasher.hash("nova-decoy-password")

    @classmethod
    def for_profile(cls, profile: str, *, concurrency: int, queue: int) -> Passwords:
        """``Passwords.for_profile("rfc9106-low-memory", concurrency=2, queue=4)``"""
        hasher = PasswordHasher.from_parameters(_PROFILES[profile])
        return cls(hasher, concurrency=concurrency, queue=queue)

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        target = password_hash or self._decoy
        try:
            ok = await self._run(self._hasher.verify, target, password)
        except (VerificationError, InvalidHashError):
            return False
        return ok and password_hash is not None

    def is_weaker(self, password_hash: str) -> bool:
        """Whether a stored hash was made with weaker parameters than the current profile,
        so it should be replaced at log-in. A stronger one is kept: replicas mid-way
        through a change of profile must not take turns rewriting each other's hashes."""
        if not self._hasher.check_needs_rehash(password_hash):
            return False
        try:
            stored = extract_parameters(password_hash)
        except InvalidHashError:
            return True
        return _weaker(stored, self._hasher)

    async def _run(self, work: Callable[..., T], *args: str) -> T:
        with self._lock:
            if self._admitted >= self._limit:
                raise Refused(
                    f"too many sign-ins in progress ({self._admitted} hashing or waiting, "
                    f"the most this server takes); try again in {BUSY_RETRY_SECONDS:g} s",
                    retry_after_seconds=BUSY_RETRY_SECONDS,
                    scope="method",
                )
            self._admitted += 1
        try:
            future = self._pool.submit(work, *args)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _: self._release())
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1

    @property
    def in_progress(self) -> int:
        """Hashes running or waiting now."""
        return self._admitted


def _weaker(stored: Parameters, hasher: PasswordHasher) -> bool:
    return (
        stored.type != hasher.type
        or stored.version < ARGON2_VERSION
        or stored.memory_cost < hasher.memory_cost
        or stored.time_cost < hasher.time_cost
        or stored.hash_len < hasher.hash_len
        or stored.salt_len < hasher.salt_len
    )
