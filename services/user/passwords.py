"""Password hashing with argon2id, off the event loop.

Hashing costs tens of milliseconds of CPU by design, so it runs in a worker thread
(argon2-cffi releases the GIL). "insecure-fast" exists for tests and benchmarks that
create many users; it is named so that nobody ships it.
"""

import asyncio

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError

_PROFILES = {
    "rfc9106-low-memory": profiles.RFC_9106_LOW_MEMORY,
    "insecure-fast": profiles.CHEAPEST,
}


class Passwords:
    def __init__(self, profile: str) -> None:
        self._hasher = PasswordHasher.from_parameters(_PROFILES[profile])
        # Verified against when the login is unknown, so response time does not reveal
        # which handles and e-mails have accounts.
        self._decoy = self._hasher.hash("nova-decoy-password")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        target = password_hash or self._decoy
        try:
            ok = await asyncio.to_thread(self._hasher.verify, target, password)
        except (VerificationError, InvalidHashError):
            return False
        return ok and password_hash is not None
