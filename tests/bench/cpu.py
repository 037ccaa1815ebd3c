"""CPU time of the processes a measurement involves, by component (gateway, services,
PostgreSQL, Redis), read by psutil before and after a measured window.

A component's processes are found again at each reading, since PostgreSQL starts a
backend per connection: CPU is summed over the processes alive at the end, less what
each had used at the start (0 for one started in between). A process that exits inside
the window takes its CPU with it; the pools the bench measures keep their connections,
so none should.

Servers are found by what identifies them: a process listening on a loopback TCP port
(a server Nova was pointed at by URL, or a gateway by its URL), an embedded PostgreSQL by
the postmaster.pid of its data folder, an embedded Redis as the redis-server child of
the `nova up` that started it. A server found by its port is counted whole: for a
PostgreSQL or Redis shared with other work (the machine's own, other databases on it)
that work is in the numbers too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

Find = Callable[[], Sequence[psutil.Process]]

_Key = tuple[int, float]
"""A process by pid and creation time: a pid reused inside the window is another process."""


@dataclass(frozen=True)
class Component:
    """One column of the CPU table: the processes `find` returns at each reading."""

    name: str
    find: Find


def process(pid: int) -> Find:
    """One process, by pid."""
    return lambda: _alive([pid])


def listening(port: int) -> Find:
    """The processes listening on `port` (any local address), e.g. a server named by a
    URL; several when workers share the port."""

    def find() -> Sequence[psutil.Process]:
        pids = {
            connection.pid
            for connection in psutil.net_connections(kind="tcp")
            if connection.status == psutil.CONN_LISTEN
            and connection.laddr
            and connection.laddr.port == port
            and connection.pid is not None
        }
        return _alive(pids)

    return find


def with_children(find: Find) -> Find:
    """What `find` returns and all their descendants (a postmaster's backends)."""

    def found() -> Sequence[psutil.Process]:
        processes: dict[int, psutil.Process] = {}
        for parent in find():
            processes[parent.pid] = parent
            try:
                processes.update((child.pid, child) for child in parent.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        return list(processes.values())

    return found


def children_named(parent: int, name: str) -> Find:
    """The descendants of `parent` called `name` (the redis-server `nova up` started)."""

    def find() -> Sequence[psutil.Process]:
        try:
            children = psutil.Process(parent).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [child for child in children if _name(child) == name]

    return find


def loopback_port(url: str, default_port: int) -> int | None:
    """The TCP port of a server `url` names on this machine, None when it is elsewhere or
    on a Unix socket (then its processes are not found by port)."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host or host.startswith("/"):
        return None
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return None
    if not all(ipaddress.ip_address(address).is_loopback for address in resolved):
        return None
    return parts.port or default_port


def postgres(database_url: str | None, data_dir: Path) -> Find | None:
    """PostgreSQL's postmaster and every backend: the server `database_url` names on a
    loopback port (all its backends, whichever database they serve), or with no URL the
    embedded one in data_dir/postgres; None when it cannot be found from here."""
    if database_url is None:
        return with_children(_postmaster(data_dir / "postgres" / "postmaster.pid"))
    port = loopback_port(database_url, 5432)
    return None if port is None else with_children(listening(port))


def redis(redis_url: str | None, nova_pid: int | None) -> Find | None:
    """The redis-server `redis_url` names on a loopback port (all its databases' work),
    or with no URL the embedded one `nova up` (pid nova_pid) started; None when it cannot
    be found from here."""
    if redis_url is None:
        return None if nova_pid is None else children_named(nova_pid, "redis-server")
    port = loopback_port(redis_url, 6379)
    return None if port is None else listening(port)


def _postmaster(pid_file: Path) -> Find:
    """The postmaster whose pid is the first line of its postmaster.pid."""

    def find() -> Sequence[psutil.Process]:
        try:
            first = pid_file.read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return []
        return _alive([int(first)]) if first.strip().isdigit() else []

    return find


def _alive(pids: Sequence[int] | set[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        try:
            found.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    return found


def _name(found: psutil.Process) -> str:
    try:
        return found.name()
    except psutil.NoSuchProcess:
        return ""


Reading = dict[str, dict[_Key, float]]


def read(components: Sequence[Component]) -> Reading:
    """User + system CPU seconds so far of each component's processes (threads included)."""
    reading: Reading = {}
    for component in components:
        seconds: dict[_Key, float] = {}
        for found in component.find():
            try:
                with found.oneshot():
                    times = found.cpu_times()
                    seconds[(found.pid, found.create_time())] = times.user + times.system
            except psutil.NoSuchProcess:
                continue
        reading[component.name] = seconds
    return reading


def used(before: Reading, after: Reading) -> Mapping[str, float]:
    """CPU seconds each component used between two readings of the same components."""
    return {
        name: sum(seconds - before.get(name, {}).get(key, 0.0) for key, seconds in now.items())
        for name, now in after.items()
    }
