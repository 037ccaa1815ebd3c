"""`nova up` with no configuration at all, driven by the real grpcurl binary.

This proves the zero-setup path on every run: the embedded PostgreSQL starts in the
working folder's .nova/, migrations apply, every service answers reflection and health,
and SIGTERM drains and exits cleanly.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.settings import DEFAULT_PORT as DEFAULT_GATEWAY_PORT
from services.registry import REGISTRY

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 180


@dataclass
class NovaUp:
    process: subprocess.Popen[str]
    endpoints: dict[str, str]
    """Service short name -> host:port, as printed by `nova up`."""
    graphql_url: str
    output: list[str]
    cwd: Path
    env: dict[str, str]


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def nova_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NovaUp]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    # The default ports are the point of this test; only a developer's own running Nova
    # (never CI) makes us move aside.
    for name in REGISTRY.services:
        if not _port_free(REGISTRY.default_ports[name]):
            env[f"NOVA_{name.upper()}_PORT"] = str(_free_port())
    if not _port_free(DEFAULT_GATEWAY_PORT):
        env["NOVA_GATEWAY_PORT"] = str(_free_port())
    cwd = tmp_path_factory.mktemp("nova-up")
    process = subprocess.Popen(
        [str(BIN / "nova"), "up"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output: list[str] = []
    endpoints: dict[str, str] = {}
    graphql_url = ""
    deadline = time.monotonic() + READY_TIMEOUT_S
    for line in process.stdout:
        output.append(line)
        match = re.match(r"nova: (\w+)\s+nova\.\S+\s+(\S+:\d+)", line)
        if match:
            endpoints[match[1]] = match[2].replace("localhost", "127.0.0.1")
        gateway = re.match(r"nova: gateway\s.*(http://\S+)", line)
        if gateway:
            graphql_url = gateway[1].replace("localhost", "127.0.0.1")
        if "nova: ready" in line or time.monotonic() > deadline:
            break
    if "nova: ready" not in "".join(output):
        process.kill()
        pytest.fail("nova up did not become ready:\n" + "".join(output))
    yield NovaUp(
        process=process,
        endpoints=endpoints,
        graphql_url=graphql_url,
        output=output,
        cwd=cwd,
        env=env,
    )
    if process.poll() is None:
        process.kill()
        process.wait()


def grpcurl(*args: str) -> str:
    result = subprocess.run(
        [str(BIN / "grpcurl"), "-plaintext", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_service_is_listed_by_reflection(nova_up: NovaUp) -> None:
    assert set(nova_up.endpoints) == set(REGISTRY.services)
    for name, address in nova_up.endpoints.items():
        listed = grpcurl(address, "list").split()
        assert REGISTRY.services[name].full_name in listed
        assert "grpc.health.v1.Health" in listed


def test_describe_shows_the_rpcs_and_their_messages(nova_up: NovaUp) -> None:
    described = grpcurl(nova_up.endpoints["user"], "describe", "nova.user.v1.UserService")
    assert "rpc BatchGetUsers ( .nova.user.v1.BatchGetUsersRequest )" in described
    message = grpcurl(nova_up.endpoints["user"], "describe", "nova.user.v1.User")
    assert "int64 follower_count = 7;" in message


def test_health_check_reports_serving(nova_up: NovaUp) -> None:
    for address in nova_up.endpoints.values():
        assert json.loads(grpcurl(address, "grpc.health.v1.Health/Check")) == {"status": "SERVING"}


def test_create_get_and_authenticated_update_with_json(nova_up: NovaUp) -> None:
    user = nova_up.endpoints["user"]
    body = '{"handle": "grace", "email": "grace@example.com", "password": "hopper1906"}'
    created = json.loads(grpcurl("-d", body, user, "nova.user.v1.UserService/CreateUser"))
    assert created["user"]["handle"] == "grace"
    fetched = json.loads(
        grpcurl("-d", '{"handle": "grace"}', user, "nova.user.v1.UserService/GetUser")
    )
    assert fetched["user"]["id"] == created["user"]["id"]
    auth = json.loads(
        grpcurl(
            "-d",
            '{"login": "grace", "password": "hopper1906"}',
            user,
            "nova.user.v1.UserService/Authenticate",
        )
    )
    updated = json.loads(
        grpcurl(
            "-H",
            f"authorization: Bearer {auth['accessToken']}",
            "-d",
            '{"bio": "COBOL"}',
            user,
            "nova.user.v1.UserService/UpdateProfile",
        )
    )
    assert updated["user"]["bio"] == "COBOL"


def test_bad_input_comes_back_as_a_readable_status(nova_up: NovaUp) -> None:
    result = subprocess.run(
        [
            str(BIN / "grpcurl"),
            "-plaintext",
            "-d",
            '{"id": "nope"}',
            nova_up.endpoints["user"],
            "nova.user.v1.UserService/GetUser",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr
    assert "id must be a UUID, got 'nope'" in result.stderr


def test_the_graphql_gateway_answers_through_the_services(nova_up: NovaUp) -> None:
    health_url = nova_up.graphql_url.removesuffix("/graphql") + "/healthz"
    with urllib.request.urlopen(health_url, timeout=10) as response:
        assert json.load(response) == {"status": "ok"}
    query = (
        'mutation { signUp(input: {handle: "linus", email: "linus@example.com", '
        'password: "penguin1991"}) { user { handle followerCount } } }'
    )
    request = urllib.request.Request(
        nova_up.graphql_url,
        data=json.dumps({"query": query}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.load(response)
    assert body["data"]["signUp"]["user"] == {"handle": "linus", "followerCount": 0}


def test_a_created_user_reaches_the_audit_log_through_relay_and_consumer(
    nova_up: NovaUp,
) -> None:
    """`nova up` runs the relay and the audit consumer on the embedded PostgreSQL log;
    `nova events audit`, run beside it in the same folder, reads what they recorded."""
    assert any("events" in line and "relay, pruning, lag, audit" in line for line in nova_up.output)
    body = '{"handle": "ada", "email": "ada@example.com", "password": "analytical1843"}'
    grpcurl("-d", body, nova_up.endpoints["user"], "nova.user.v1.UserService/CreateUser")
    shown = ""
    for _ in range(50):
        audit = subprocess.run(
            [str(BIN / "nova"), "events", "audit", "--type", "UserCreated"],
            cwd=nova_up.cwd,
            env=nova_up.env | {"COLUMNS": "200", "NOVA_LOG_LEVEL": "WARNING"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert audit.returncode == 0, audit.stderr
        shown = audit.stdout
        if "handle=ada" in shown:
            break
        time.sleep(0.2)
    assert "handle=ada" in shown, shown


def _signed_up(nova_up: NovaUp, handle: str) -> tuple[str, str]:
    """(user id, bearer header) of a new user."""
    user = nova_up.endpoints["user"]
    body = json.dumps(
        {"handle": handle, "email": f"{handle}@example.com", "password": "feed-password-1"}
    )
    created = json.loads(grpcurl("-d", body, user, "nova.user.v1.UserService/CreateUser"))
    login = json.dumps({"login": handle, "password": "feed-password-1"})
    auth = json.loads(grpcurl("-d", login, user, "nova.user.v1.UserService/Authenticate"))
    return created["user"]["id"], f"authorization: Bearer {auth['accessToken']}"


def test_a_followed_authors_post_reaches_the_home_feed_through_grpcurl(nova_up: NovaUp) -> None:
    """Follow and post through the user and content services; `nova up`'s relay and feed
    consumer put the post in the follower's Redis timeline, which GetHomeFeed reads."""
    author, author_auth = _signed_up(nova_up, "feedauthor")
    _, reader_auth = _signed_up(nova_up, "feedreader")
    follow = json.dumps({"user_id": author})
    grpcurl(
        "-H",
        reader_auth,
        "-d",
        follow,
        nova_up.endpoints["user"],
        "nova.user.v1.UserService/Follow",
    )
    post = json.loads(
        grpcurl(
            "-H",
            author_auth,
            "-d",
            '{"text": "hello, followers"}',
            nova_up.endpoints["content"],
            "nova.content.v1.ContentService/CreatePost",
        )
    )
    feed: dict[str, object] = {}
    for _ in range(100):
        feed = json.loads(
            grpcurl(
                "-H", reader_auth, nova_up.endpoints["feed"], "nova.feed.v1.FeedService/GetHomeFeed"
            )
        )
        if feed.get("items"):
            break
        time.sleep(0.1)
    assert feed["items"] == [{"postId": post["post"]["id"], "authorId": author}]


def test_an_embedded_redis_answers_on_its_socket_in_the_data_folder(nova_up: NovaUp) -> None:
    path = nova_up.cwd / ".nova" / "redis" / "redis.sock"
    assert any(f"redis: embedded Redis in {path.parent}" in line for line in nova_up.output)
    with socket.socket(socket.AF_UNIX) as redis:
        redis.connect(str(path))
        redis.sendall(b"PING\r\n")
        assert redis.makefile("rb").readline() == b"+PONG\r\n"


def test_sigterm_drains_and_exits_cleanly(nova_up: NovaUp) -> None:
    nova_up.process.send_signal(signal.SIGTERM)
    remaining, _ = nova_up.process.communicate(timeout=60)
    assert nova_up.process.returncode == 0, remaining
    assert "nova: draining" in remaining
    redis = nova_up.cwd / ".nova" / "redis"
    assert (redis / "dump.rdb").is_file(), "Redis was not stopped with its snapshot"
    assert not (redis / "redis.sock").exists()
