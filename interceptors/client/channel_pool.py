"""K channels per target, used round-robin and renewed while in use; the end of every chain.

One HTTP/2 connection pushes every call through one socket and pins a client to the
replica it reached first, so a long-lived client never sees replicas added later. Each
channel therefore retires after a jittered maximum age (the jitter keeps the K from
renewing together), and one found in TRANSIENT_FAILURE is replaced: a fresh channel
also forgets gRPC's reconnect backoff (up to 120 s), which would otherwise keep a
restarted backend out of reach. The fresh channel connects before it takes the slot, so
no call waits for a handshake; the retired one takes no new calls and closes once its
in-flight calls finish (at most `drain_seconds`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from grpc import aio

from interceptors.client.call import OutgoingCall
from interceptors.client.tls import ChannelTls, open_channel

log = structlog.get_logger("nova.client.pool")

_FAILED = grpc.ChannelConnectivity.TRANSIENT_FAILURE
_OPTIONS = [
    # Without it, channels with equal arguments share one connection (gRPC's global
    # subchannel pool) and neither the K channels nor a renewal would open a new one.
    ("grpc.use_local_subchannel_pool", 1),
]


@dataclass(frozen=True)
class PoolSettings:
    channels: int = 4
    max_age_seconds: float = 240.0
    """Below the servers' grpc.max_connection_age_ms, so the client renews first, warm."""
    age_jitter: float = 0.2
    """Each channel retires after max_age_seconds * uniform(1 - age_jitter, 1)."""
    drain_seconds: float = 30.0
    connect_seconds: float = 2.0
    """How long a renewal waits for the fresh channel to connect before swapping anyway."""
    failed_replace_seconds: float = 1.0
    """A failed channel is replaced once it is this old: soon enough to reach a restarted
    backend quickly, seldom enough not to churn while it stays down."""
    check_seconds: float = 0.1

    def __post_init__(self) -> None:
        if self.channels < 1 or not 0 <= self.age_jitter < 1 or self.max_age_seconds <= 0:
            raise ValueError(f"need channels >= 1, max age > 0, 0 <= jitter < 1: {self}")


@dataclass
class _Slot:
    address: str
    channel: aio.Channel
    born: float
    retire_at: float
    methods: dict[str, aio.UnaryUnaryMultiCallable[Any, Any]] = field(default_factory=dict)


class ChannelPool:
    """Sends each call on the next healthy channel, preferring a replica not yet tried."""

    def __init__(
        self, addresses: Sequence[str], settings: PoolSettings, tls: ChannelTls | None = None
    ) -> None:
        """`tls`: every channel (renewals too) uses it; None, plaintext."""
        if not addresses:
            raise ValueError("a channel pool needs at least one address")
        self._settings = settings
        self._credentials = tls.credentials() if tls else None
        self._slots = [self._open(addresses[i % len(addresses)]) for i in range(settings.channels)]
        self._next = 0
        self._draining: set[asyncio.Task[None]] = set()
        self.renewed = {"age": 0, "failure": 0}
        """Channels replaced so far, by reason."""
        self._tender = asyncio.get_running_loop().create_task(self._tend())

    async def __call__(self, call: OutgoingCall) -> Any:
        slot = self._pick(call.tried)
        call.tried.append(slot.address)
        send = slot.methods.get(call.method)
        if send is None:
            send = slot.methods[call.method] = slot.channel.unary_unary(
                call.method, call.request_serializer, call.response_deserializer
            )
        return await send(call.request, timeout=call.timeout, metadata=call.metadata)

    def _pick(self, tried: list[str]) -> _Slot:
        slots = self._slots
        start = self._next
        if not tried:
            # Only first attempts take a turn: were retries and hedges to take one too, the
            # next caller would skip a channel, and could keep landing on a slow replica.
            self._next = (start + 1) % len(slots)
        fallback: _Slot | None = None
        for offset in range(len(slots)):
            slot = slots[(start + offset) % len(slots)]
            if slot.channel.get_state() is _FAILED:
                continue
            if slot.address not in tried:
                return slot
            fallback = fallback or slot
        return fallback or slots[start]

    async def close(self) -> None:
        """Stops renewing and closes every channel once its in-flight calls finish."""
        self._tender.cancel()
        await asyncio.wait([self._tender])
        closing = [slot.channel.close(self._settings.drain_seconds) for slot in self._slots]
        await asyncio.gather(*self._draining, *closing)

    def _open(self, address: str) -> _Slot:
        now = time.monotonic()
        age = self._settings.max_age_seconds * (1 - self._settings.age_jitter * random.random())
        channel = open_channel(address, self._credentials, _OPTIONS)
        return _Slot(address, channel, now, now + age)

    async def _tend(self) -> None:
        settings = self._settings
        while True:
            for index, slot in enumerate(self._slots):
                now = time.monotonic()
                reason = None
                if now >= slot.retire_at:
                    reason = "age"
                elif (
                    now - slot.born >= settings.failed_replace_seconds
                    and slot.channel.get_state() is _FAILED
                ):
                    reason = "failure"
                if reason is not None:
                    try:
                        await self._renew(index, reason)
                    except Exception:
                        # The pool must keep renewing; this slot is tried again next check.
                        log.exception("channel renewal failed", address=slot.address)
            soonest = min(slot.retire_at for slot in self._slots) - time.monotonic()
            await asyncio.sleep(max(0.0, min(settings.check_seconds, soonest)))

    async def _renew(self, index: int, reason: str) -> None:
        old = self._slots[index]
        fresh = self._open(old.address)
        if reason == "age":
            try:
                async with asyncio.timeout(self._settings.connect_seconds):
                    await fresh.channel.channel_ready()
            except TimeoutError:
                log.warning("fresh channel not ready in time", address=old.address)
            except BaseException:
                await fresh.channel.close(None)
                raise
        self._slots[index] = fresh
        self.renewed[reason] += 1
        (log.info if reason == "failure" else log.debug)(
            "channel renewed", address=old.address, reason=reason
        )
        drain = asyncio.get_running_loop().create_task(
            old.channel.close(self._settings.drain_seconds)
        )
        self._draining.add(drain)
        drain.add_done_callback(self._draining.discard)
