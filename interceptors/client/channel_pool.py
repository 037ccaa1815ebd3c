"""Channels to every replica of a target, used in turn and renewed while in use; the end of
every chain.

Replicas: a target names one address or several (interceptors.client.targets); its
`dns:///` names are resolved again every `resolve_seconds`, and a replica whose address no
longer resolves is dropped (its channels drain). Each first attempt goes to the next
usable replica in turn, a retry or hedge to one its call has not tried yet (`call.tried`).
A replica is out while its health says NOT_SERVING or after it answered UNAVAILABLE
(interceptors.client.replicas). When none is usable, calls go out anyway, to one not
tried first: refusing them here would turn doubt into certain failure, and stopping calls
to a target that is down is the breaker's job.

Channels: one HTTP/2 connection pushes every call through one socket and pins a client to
the backend it reached first, so behind an address that balances connections (a Service's
virtual IP) a long-lived client would never see replicas added later. So each replica gets
channels enough for the target to have `channels` in all (at least one each). Each channel
retires after a jittered maximum age (the jitter keeps them from renewing together), and
one found in TRANSIENT_FAILURE is replaced: a fresh channel also forgets gRPC's reconnect
backoff (up to 120 s), which would otherwise keep a restarted backend out of reach. The
fresh channel connects before it takes the slot, so no call waits for a handshake; the
retired one takes no new calls and closes once its in-flight calls finish (at most
`drain_seconds`).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from interceptors.client.call import OutgoingCall, ReplicaLost
from interceptors.client.health_watch import watch_health
from interceptors.client.refusal import Refusal, refusal_of
from interceptors.client.replicas import EjectionSettings, Replica, Slot
from interceptors.client.targets import Endpoint, is_dns, parse_target, resolve
from interceptors.client.tls import ChannelTls, open_channel

log = structlog.get_logger("nova.client.pool")

_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
_OPTIONS: list[tuple[str, Any]] = [
    # Without it, channels with equal arguments share one connection (gRPC's global
    # subchannel pool) and neither the channels of a replica nor a renewal would open a new one.
    ("grpc.use_local_subchannel_pool", 1),
]
Resolver = Callable[[str], Awaitable[tuple[Endpoint, ...]]]
_NOT_REFUSED = Refusal(None, None)
_RESOLVE_TIMEOUT_SECONDS = 10.0
_RESOLVE_EMPTY_SECONDS = 1.0
"""How soon a name is asked again while the target has no replica at all."""


@dataclass(frozen=True)
class PoolSettings:
    channels: int = 4
    """Channels to the target, shared out over its replicas (at least one each)."""
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
    resolve_seconds: float = 5.0
    """How often dns:/// names are resolved again (Kubernetes' DNS answers for 5 s)."""
    ejection: EjectionSettings = field(default_factory=EjectionSettings)
    watch_health: bool = True
    """Follow each replica's health (a Watch stream each); off, only ejection takes one out."""
    health_retry_max_seconds: float = 1.0
    """The longest wait between attempts to watch a replica that cannot be reached."""

    def __post_init__(self) -> None:
        if self.channels < 1 or not 0 <= self.age_jitter < 1 or self.max_age_seconds <= 0:
            raise ValueError(f"need channels >= 1, max age > 0, 0 <= jitter < 1: {self}")
        if self.resolve_seconds <= 0 or self.health_retry_max_seconds <= 0:
            raise ValueError(f"need resolve_seconds and health_retry_max_seconds > 0: {self}")


class ChannelPool:
    """Sends each call to the next usable replica, preferring one not yet tried."""

    def __init__(
        self,
        addresses: Sequence[str],
        settings: PoolSettings,
        tls: ChannelTls | None = None,
        *,
        resolver: Resolver = resolve,
    ) -> None:
        """`addresses`: targets (interceptors.client.targets), each one or several entries;
        `tls`: every channel (renewals too) uses it; None, plaintext. `resolver` answers
        for dns:/// entries (tests stand in for a DNS server with one)."""
        entries = list(itertools.chain.from_iterable(parse_target(text) for text in addresses))
        if not entries:
            raise ValueError("a channel pool needs at least one address")
        self._settings = settings
        self._resolver = resolver
        self._credentials = tls.credentials() if tls else None
        self._names = [entry for entry in entries if is_dns(entry)]
        self._static = tuple(dict.fromkeys(Endpoint(e) for e in entries if not is_dns(e)))
        self._found: dict[str, tuple[Endpoint, ...]] = {}
        self._resolution_error: str | None = None
        self._replicas: list[Replica] = []
        self._next = 0
        self._draining: set[asyncio.Future[Any]] = set()
        self._watches_ending: set[asyncio.Task[None]] = set()
        self.renewed = {"age": 0, "failure": 0}
        """Channels replaced so far, by reason."""
        self.ejections = 0
        """Times a replica was taken out for answering UNAVAILABLE (failed probes included)."""
        self._resolved = asyncio.Event()
        self._set_replicas(self._static)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._tend())]
        if self._names:
            self._tasks.append(loop.create_task(self._resolve_forever()))
        else:
            self._resolved.set()

    @property
    def replicas(self) -> list[Replica]:
        """The replicas now in the rotation, in turn order (read them, do not change them)."""
        return list(self._replicas)

    async def __call__(self, call: OutgoingCall) -> Any:
        if not self._replicas:
            try:
                async with asyncio.timeout(call.timeout):
                    await self._resolved.wait()
            except TimeoutError:
                pass
            if not self._replicas:
                raise self._none_found()
        replica = self._pick(call.tried)
        slot = replica.slot()
        call.tried.append(replica.address)
        send = slot.methods.get(call.method)
        if send is None:
            send = slot.methods[call.method] = slot.channel.unary_unary(
                call.method, call.request_serializer, call.response_deserializer
            )
        try:
            return await send(call.request, timeout=call.timeout, metadata=call.metadata)
        except aio.AioRpcError as error:
            refusal = refusal_of(error)
            if error.code() is not _UNAVAILABLE or refusal != _NOT_REFUSED:
                # Other codes are answers; a refusal (with a pushback, or about one
                # caller) says the replica is well and chose not to serve this call.
                raise
            self._eject(replica, error)
            if any(other.usable() for other in self._replicas if other is not replica):
                raise ReplicaLost(error, replica.address) from None
            raise

    def _pick(self, tried: list[str]) -> Replica:
        replicas = self._replicas
        start = self._next % len(replicas)
        if not tried:
            # Only first attempts take a turn: were retries and hedges to take one too, the
            # next caller would skip a replica, and could keep landing on a slow one.
            self._next = start + 1
        fallback: Replica | None = None
        untried: Replica | None = None
        for offset in range(len(replicas)):
            replica = replicas[(start + offset) % len(replicas)]
            fresh = replica.address not in tried
            if replica.usable():
                if fresh:
                    return replica
                fallback = fallback or replica
            elif fresh:
                untried = untried or replica
        return fallback or untried or replicas[start]

    def _none_found(self) -> aio.AioRpcError:
        why = self._resolution_error or "the name is still being resolved"
        return aio.AioRpcError(
            _UNAVAILABLE,
            aio.Metadata(),
            aio.Metadata(),
            f"no replica of {', '.join(self._names)}: {why}",
            None,
        )

    def _eject(self, replica: Replica, error: aio.AioRpcError) -> None:
        seconds = replica.eject(time.monotonic(), self._settings.ejection)
        if seconds is not None:
            self.ejections += 1
            log.info(
                "replica ejected",
                address=replica.address,
                seconds=seconds,
                code=error.code().name,
                details=error.details(),
            )

    async def close(self) -> None:
        """Stops renewing, resolving and watching, and closes every channel once its
        in-flight calls finish."""
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(self._tasks)
        for replica in self._replicas:
            self._drop(replica)
        self._replicas = []
        if self._watches_ending:
            await asyncio.wait(self._watches_ending)
        await asyncio.gather(*self._draining)

    def _set_replicas(self, endpoints: Sequence[Endpoint]) -> None:
        """Makes `endpoints` the rotation: new ones get channels (and a health watch),
        missing ones drain."""
        wanted = list(dict.fromkeys(endpoints))
        current = {replica.endpoint: replica for replica in self._replicas}
        for endpoint, replica in current.items():
            if endpoint not in wanted:
                log.info("replica removed", address=endpoint.address)
                self._drop(replica)
        per_replica = max(1, math.ceil(self._settings.channels / max(1, len(wanted))))
        self._replicas = [
            current.get(endpoint) or self._add(endpoint, per_replica) for endpoint in wanted
        ]

    def _add(self, endpoint: Endpoint, channels: int) -> Replica:
        replica = Replica(endpoint, [self._open(endpoint) for _ in range(channels)])
        if self._settings.watch_health:
            replica.watch = asyncio.get_running_loop().create_task(
                watch_health(
                    lambda: self._channel(endpoint),
                    lambda serving: self._health(replica, serving),
                    self._settings.health_retry_max_seconds,
                )
            )
        return replica

    def _drop(self, replica: Replica) -> None:
        if replica.watch is not None:
            replica.watch.cancel()
            self._watches_ending.add(replica.watch)
            replica.watch.add_done_callback(self._watches_ending.discard)
        for slot in replica.slots:
            self._background(slot.channel.close(self._settings.drain_seconds))

    def _health(self, replica: Replica, serving: bool) -> None:
        if replica.serving != serving:
            replica.serving = serving
            log.info(
                "replica in" if serving else "replica out",
                address=replica.address,
                health="SERVING" if serving else "NOT_SERVING or unreachable",
            )

    def _channel(self, endpoint: Endpoint) -> aio.Channel:
        options = list(_OPTIONS)
        if endpoint.authority is not None:
            # A resolved address: the replica is still known (and certified) by its name.
            options.append(("grpc.default_authority", endpoint.authority))
            if self._credentials is not None:
                host = endpoint.authority.rpartition(":")[0].removeprefix("[").removesuffix("]")
                options.append(("grpc.ssl_target_name_override", host))
        return open_channel(endpoint.address, self._credentials, options)

    def _open(self, endpoint: Endpoint) -> Slot:
        now = time.monotonic()
        age = self._settings.max_age_seconds * (1 - self._settings.age_jitter * random.random())
        return Slot(self._channel(endpoint), now, now + age)

    def _background(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _resolve_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._resolve(name) for name in self._names))
            found = itertools.chain.from_iterable(self._found.values())
            self._set_replicas([*self._static, *found])
            self._resolved.set()
            wait = self._settings.resolve_seconds
            await asyncio.sleep(wait if self._replicas else min(wait, _RESOLVE_EMPTY_SECONDS))

    async def _resolve(self, name: str) -> None:
        """Keeps what `name` resolved to last when it now resolves to nothing: a DNS outage
        must not empty the rotation."""
        try:
            async with asyncio.timeout(_RESOLVE_TIMEOUT_SECONDS):
                self._found[name] = await self._resolver(name)
        except (OSError, TimeoutError) as error:
            why = f"{name} did not resolve: {error or 'no answer in time'}"
            if why != self._resolution_error:
                log.warning("name did not resolve", name=name, error=str(error))
            self._resolution_error = why

    async def _tend(self) -> None:
        settings = self._settings
        while True:
            now = time.monotonic()
            for replica in self._replicas:
                if replica.probe_due(now):
                    replica.probing = True
                    self._background(self._probe(replica))
                for index, slot in enumerate(replica.slots):
                    reason = None
                    if now >= slot.retire_at:
                        reason = "age"
                    elif now - slot.born >= settings.failed_replace_seconds and slot.failed:
                        reason = "failure"
                    if reason is not None:
                        try:
                            await self._renew(replica, index, reason)
                        except Exception:
                            # The pool must keep renewing; this slot is tried again next check.
                            log.exception("channel renewal failed", address=replica.address)
            retire = (slot.retire_at for replica in self._replicas for slot in replica.slots)
            soonest = min(retire, default=now + settings.check_seconds) - time.monotonic()
            await asyncio.sleep(max(0.0, min(settings.check_seconds, soonest)))

    async def _probe(self, replica: Replica) -> None:
        """An ejected replica's way back: a health Check over one of its call channels."""
        timeout = self._settings.ejection.probe_timeout_seconds
        try:
            check = health_pb2_grpc.HealthStub(replica.slot().channel).Check
            reply = await check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            passed = reply.status == health_pb2.HealthCheckResponse.SERVING
        except aio.AioRpcError as error:
            passed = error.code() is grpc.StatusCode.UNIMPLEMENTED
        finally:
            replica.probing = False
        now = time.monotonic()
        if passed:
            replica.restore(now)
            log.info("replica back", address=replica.address)
        else:
            replica.ejected_until = None
            replica.eject(now, self._settings.ejection)
            self.ejections += 1

    async def _renew(self, replica: Replica, index: int, reason: str) -> None:
        old = replica.slots[index]
        fresh = self._open(replica.endpoint)
        if reason == "age":
            try:
                async with asyncio.timeout(self._settings.connect_seconds):
                    await fresh.channel.channel_ready()
            except TimeoutError:
                log.warning("fresh channel not ready in time", address=replica.address)
            except BaseException:
                await fresh.channel.close(None)
                raise
        if replica not in self._replicas:
            await fresh.channel.close(None)  # dropped while the fresh one connected
            return
        replica.slots[index] = fresh
        self.renewed[reason] += 1
        (log.info if reason == "failure" else log.debug)(
            "channel renewed", address=replica.address, reason=reason
        )
        self._background(old.channel.close(self._settings.drain_seconds))
