"""Access tokens verify only with the right key and only until they expire; the key is
NOVA_AUTH_SECRET, or in development one made whole, once and private in the data folder."""

import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from services.runtime.auth import Caller, TokenCodec, development_secret
from services.runtime.config import Config
from services.runtime.env import ConfigError
from services.runtime.errors import Unauthenticated
from services.runtime.process import signing_key

SECRET = "s" * 40


def test_a_token_verifies_back_to_its_caller() -> None:
    caller = Caller(user_id=uuid.uuid4(), tenant_id=uuid.uuid4(), handle="alice")
    token, _ = TokenCodec(SECRET, timedelta(minutes=5)).issue(caller)
    assert TokenCodec(SECRET, timedelta(minutes=5)).verify(token) == caller


def test_expired_and_foreign_tokens_are_rejected_with_a_reason() -> None:
    caller = Caller(user_id=uuid.uuid4(), tenant_id=uuid.uuid4(), handle="alice")
    expired, _ = TokenCodec(SECRET, timedelta(seconds=-1)).issue(caller)
    with pytest.raises(Unauthenticated, match="expired"):
        TokenCodec(SECRET, timedelta(minutes=5)).verify(expired)
    foreign, _ = TokenCodec("k" * 40, timedelta(minutes=5)).issue(caller)
    with pytest.raises(Unauthenticated, match="not valid"):
        TokenCodec(SECRET, timedelta(minutes=5)).verify(foreign)
    with pytest.raises(Unauthenticated, match="not valid"):
        TokenCodec(SECRET, timedelta(minutes=5)).verify("a.b.c")


def test_the_development_key_is_made_once_whole_and_private(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:  # processes starting together
        keys = set(pool.map(lambda _: development_secret(tmp_path), range(32)))
    (key,) = keys
    assert len(key) >= 32
    path = tmp_path / "auth-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auth-secret"]  # no drafts left
    assert development_secret(tmp_path) == key


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [
        ("k" * 64, 0o644, "can be read by other users \\(mode 644\\); run `chmod 600"),
        ("", 0o600, "is empty; delete it"),
        ("short", 0o600, "has 5 characters, fewer than 32"),
    ],
)
def test_a_development_key_file_that_is_unsafe_stops_the_start(
    tmp_path: Path, text: str, mode: int, message: str
) -> None:
    path = tmp_path / "auth-secret"
    path.write_text(text)
    path.chmod(mode)
    with pytest.raises(ConfigError, match=message):
        development_secret(tmp_path)


def test_only_development_falls_back_to_a_key_of_the_data_folders(tmp_path: Path) -> None:
    config = Config.from_env({"NOVA_DATA_DIR": str(tmp_path)}, default_ports={})
    with pytest.raises(ConfigError, match="NOVA_AUTH_SECRET is not set"):
        signing_key(config, development=False)
    assert not (tmp_path / "auth-secret").exists()
    assert signing_key(config, development=True) == development_secret(tmp_path)
    configured = Config.from_env(
        {"NOVA_DATA_DIR": str(tmp_path), "NOVA_AUTH_SECRET": SECRET}, default_ports={}
    )
    assert signing_key(configured, development=False) == SECRET
