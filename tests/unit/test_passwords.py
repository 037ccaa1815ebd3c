"""Password hashing runs on a bounded pool: `concurrency` at once, `queue` waiting, and past
that a refusal at once; a slot is held until its hash is done, even if its caller left.
Stored hashes weaker than the profile are flagged for rehashing, stronger ones are not."""

from __future__ import annotations

import asyncio
import threading

import pytest
from argon2 import PasswordHasher, profiles

from interceptors.context import REFUSAL_KEY, REFUSAL_METHOD
from services.runtime.errors import Refused
from services.user.passwords import Passwords


class GatedHasher(PasswordHasher):
    """argon2's cheapest hasher, whose hashes wait for the test to open the gate, so the
    test knows how many are running without timing them."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1, hash_len=4, salt_len=8)
        self.gate = threading.Event()
        self.gate.set()
        self.running = threading.Semaphore(0)

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.running.release()
        self.gate.wait(10)
        return super().hash(password, salt=salt)


async def running(hasher: GatedHasher, count: int) -> None:
    """Until `count` more hashes have started in the pool's threads."""
    for _ in range(count):
        assert await asyncio.to_thread(hasher.running.acquire, True, 10)


async def drained(passwords: Passwords) -> None:
    """Until every slot is given back, which happens in the pool's thread (checked every
    5 ms; the hashes themselves take microseconds once their gate is open)."""
    for _ in range(2000):
        if not passwords.in_progress:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{passwords.in_progress} slots still held after 10 s")


async def test_hashes_past_the_pool_and_its_queue_are_refused_at_once() -> None:
    hasher = GatedHasher()
    passwords = Passwords(hasher, concurrency=1, queue=1)
    await running(hasher, 1)  # the decoy, made at construction
    hasher.gate.clear()
    first = asyncio.ensure_future(passwords.hash("first password"))
    await running(hasher, 1)
    second = asyncio.ensure_future(passwords.hash("second password"))
    await asyncio.sleep(0)
    assert passwords.in_progress == 2
    with pytest.raises(Refused) as refused:
        await passwords.verify(None, "third password")
    assert str(refused.value) == (
        "too many sign-ins in progress (2 hashing or waiting, the most this server takes); "
        "try again in 1 s"
    )
    assert (REFUSAL_KEY, REFUSAL_METHOD) in refused.value.trailing_metadata
    hasher.gate.set()
    first_hash, second_hash = await asyncio.gather(first, second)
    assert hasher.verify(first_hash, "first password")
    assert hasher.verify(second_hash, "second password")
    await drained(passwords)
    assert await passwords.verify(await passwords.hash("again"), "again")


async def test_a_caller_that_leaves_keeps_its_slot_until_its_hash_is_done() -> None:
    hasher = GatedHasher()
    passwords = Passwords(hasher, concurrency=1, queue=0)
    await running(hasher, 1)
    hasher.gate.clear()
    left = asyncio.ensure_future(passwords.hash("abandoned"))
    await running(hasher, 1)
    left.cancel()
    with pytest.raises(asyncio.CancelledError):
        await left
    with pytest.raises(Refused):
        await passwords.hash("next")
    hasher.gate.set()
    await drained(passwords)
    assert await passwords.hash("next")


def test_only_a_hash_weaker_than_the_profile_is_to_be_replaced() -> None:
    weak = PasswordHasher.from_parameters(profiles.CHEAPEST)
    strong = PasswordHasher(time_cost=2, memory_cost=1024, parallelism=1)
    wider = PasswordHasher(time_cost=2, memory_cost=1024, parallelism=2)
    strong_passwords = Passwords(strong, concurrency=1, queue=0)
    weak_passwords = Passwords(weak, concurrency=1, queue=0)
    assert strong_passwords.is_weaker(weak.hash("pw"))
    assert not strong_passwords.is_weaker(strong.hash("pw"))
    assert not strong_passwords.is_weaker(wider.hash("pw")), "other parallelism, not weaker"
    assert not weak_passwords.is_weaker(strong.hash("pw")), "a stronger hash is kept"
