"""One replica of a target as the pool sees it: its channels, what its health service last
said, and whether it is ejected for answering UNAVAILABLE.

A replica is out of the rotation while either is true, and each has its own way back:
- its health service says NOT_SERVING (it is draining before it stops), or cannot be
  reached: back when its health Watch says SERVING again (interceptors.client.health_watch);
- a call to it failed UNAVAILABLE (it died, or stopped taking calls): ejected for
  `base_seconds`, doubled for each ejection in a row up to `max_seconds`, and back only
  when a health Check sent over its call channels answers SERVING (the pool's probe).
An ejection streak ends once the replica has stayed in for `max_seconds`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio

from interceptors.client.targets import Endpoint

_FAILED = grpc.ChannelConnectivity.TRANSIENT_FAILURE


@dataclass(frozen=True)
class EjectionSettings:
    base_seconds: float = 1.0
    max_seconds: float = 10.0
    """Also how long a replica must stay in before its next ejection starts from the base."""
    probe_timeout_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.base_seconds <= self.max_seconds or self.probe_timeout_seconds <= 0:
            raise ValueError(f"need 0 < base <= max and a probe timeout > 0: {self}")


@dataclass
class Slot:
    """One channel of a replica, with the time it retires (connection rotation)."""

    channel: aio.Channel
    born: float
    retire_at: float
    methods: dict[str, aio.UnaryUnaryMultiCallable[Any, Any]] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.channel.get_state() is _FAILED


@dataclass
class Replica:
    endpoint: Endpoint
    slots: list[Slot]
    serving: bool = True
    """What its health Watch last said; True until it says otherwise."""
    ejected_until: float | None = None
    """None while in; set when ejected. Past it, the replica waits for its probe."""
    ejections: int = 0
    restored_at: float = float("-inf")
    probing: bool = False
    watch: asyncio.Task[None] | None = None
    _next: int = 0

    @property
    def address(self) -> str:
        return self.endpoint.address

    def usable(self) -> bool:
        return (
            self.serving
            and self.ejected_until is None
            and any(not slot.failed for slot in self.slots)
        )

    def slot(self) -> Slot:
        """Its next channel that is not failed (the next one, when all are)."""
        slots = self.slots
        start = self._next
        self._next = (start + 1) % len(slots)
        for offset in range(len(slots)):
            slot = slots[(start + offset) % len(slots)]
            if not slot.failed:
                return slot
        return slots[start]

    def eject(self, now: float, settings: EjectionSettings) -> float | None:
        """Takes it out; the seconds it stays out, or None when it already was."""
        if self.ejected_until is not None:
            return None
        if now - self.restored_at >= settings.max_seconds:
            self.ejections = 0
        seconds: float = min(settings.max_seconds, settings.base_seconds * 2.0**self.ejections)
        self.ejections += 1
        self.ejected_until = now + seconds
        return seconds

    def probe_due(self, now: float) -> bool:
        return self.ejected_until is not None and not self.probing and now >= self.ejected_until

    def restore(self, now: float) -> None:
        self.ejected_until = None
        self.restored_at = now
