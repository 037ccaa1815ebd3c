"""Access tokens verify only with the right key, for the right audience and only until
they expire; the key is NOVA_AUTH_SECRET, or in development one made whole, once and
private in the data folder; previous keys still verify, by the `kid` a token names."""

import stat
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

import jwt
import pytest

from services.runtime import auth
from services.runtime.auth import Caller, TokenCodec, development_secret, key_id
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


OLD, NEW = "o" * 40, "n" * 40
ALICE = Caller(user_id=uuid.uuid4(), tenant_id=uuid.uuid4(), handle="alice")
TTL = timedelta(minutes=5)


def test_a_token_names_its_key_and_audience() -> None:
    codec = TokenCodec(SECRET, TTL, audience="nova")
    token, _ = codec.issue(ALICE)
    assert jwt.get_unverified_header(token)["kid"] == key_id(SECRET) == codec.key_id
    assert len(codec.key_id) == 16
    assert key_id(OLD) != key_id(NEW)
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == "nova"


def test_a_token_of_a_previous_key_verifies_while_that_key_is_listed_and_not_after() -> None:
    before = TokenCodec(OLD, TTL)
    issued_before, _ = before.issue(ALICE)
    rotating = TokenCodec(NEW, TTL, previous_secrets=(OLD,))
    assert rotating.verify(issued_before) == ALICE
    issued_now, _ = rotating.issue(ALICE)
    assert jwt.get_unverified_header(issued_now)["kid"] == key_id(NEW), "signs with the new key"
    with pytest.raises(Unauthenticated, match="not valid"):
        before.verify(issued_now)
    retired = TokenCodec(NEW, TTL)
    assert retired.verify(issued_now) == ALICE
    with pytest.raises(Unauthenticated, match="signed with a key this service does not accept"):
        retired.verify(issued_before)


def test_a_token_with_a_known_kid_but_another_key_fails_its_signature() -> None:
    claims = jwt.decode(
        TokenCodec(SECRET, TTL).issue(ALICE)[0], options={"verify_signature": False}
    )
    forged = jwt.encode(claims, "f" * 40, algorithm="HS256", headers={"kid": key_id(SECRET)})
    with pytest.raises(Unauthenticated, match="not valid \\(malformed, or signed with another"):
        TokenCodec(SECRET, TTL).verify(forged)


def test_a_token_without_an_audience_or_for_another_one_is_refused() -> None:
    codec = TokenCodec(SECRET, TTL, audience="nova")
    for_other, _ = TokenCodec(SECRET, TTL, audience="billing").issue(ALICE)
    with pytest.raises(Unauthenticated, match="not meant for audience 'nova'"):
        codec.verify(for_other)
    claims = jwt.decode(codec.issue(ALICE)[0], options={"verify_signature": False})
    del claims["aud"]
    no_audience = jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": key_id(SECRET)})
    with pytest.raises(Unauthenticated, match="not meant for audience 'nova'"):
        codec.verify(no_audience)


def test_a_token_without_a_kid_is_refused_with_a_reason() -> None:
    claims = jwt.decode(
        TokenCodec(SECRET, TTL).issue(ALICE)[0], options={"verify_signature": False}
    )
    with pytest.raises(Unauthenticated, match="names no signing key"):
        TokenCodec(SECRET, TTL).verify(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_previous_keys_and_the_audience_are_read_with_bounds(tmp_path: Path) -> None:
    env = {"NOVA_DATA_DIR": str(tmp_path), "NOVA_AUTH_PREVIOUS_SECRETS": f" {OLD} ,{NEW},"}
    config = Config.from_env(env, default_ports={})
    assert (config.auth_previous_secrets, config.auth_audience) == ((OLD, NEW), "nova")
    for variable, value, message in [
        ("NOVA_AUTH_PREVIOUS_SECRETS", f"{OLD},short", "key 2 has 5 characters, fewer than 32"),
        ("NOVA_AUTH_PREVIOUS_SECRETS", ",".join([OLD] * 11), "holds 11 keys; at most 10"),
        ("NOVA_AUTH_AUDIENCE", "a" * 101, "at most 100 printable characters"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Config.from_env({variable: value}, default_ports={})
    assert Config.from_env({"NOVA_AUTH_PREVIOUS_SECRETS": ",".join([OLD] * 10)}, default_ports={})
    assert Config.from_env({"NOVA_AUTH_AUDIENCE": "a" * 100}, default_ports={}).auth_audience


def test_a_verified_token_is_remembered_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    codec = TokenCodec(SECRET, timedelta(seconds=1))
    token, _ = codec.issue(ALICE)
    assert codec.verify(token) == ALICE
    with monkeypatch.context() as patched:
        patched.setattr(jwt, "decode", _no_decoding)
        assert codec.verify(token) == ALICE  # remembered: not decoded again

    time.sleep(1.1)  # tokens' expiry has a resolution of a second

    with pytest.raises(Unauthenticated, match="expired"):
        codec.verify(token)


def _no_decoding(*args: object, **kwargs: object) -> NoReturn:
    raise AssertionError("the token was decoded again")


def test_remembered_tokens_are_bounded_and_forged_ones_never_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "VERIFIED_TOKENS", 3)
    codec = TokenCodec(SECRET, TTL)
    tokens = [
        codec.issue(Caller(user_id=uuid.uuid4(), tenant_id=uuid.uuid4(), handle=f"u{i}"))[0]
        for i in range(5)
    ]
    for token in tokens:
        codec.verify(token)
    assert len(codec._verified) == 3
    assert codec.verify(tokens[0]).handle == "u0"  # forgotten, so verified again

    forged = tokens[1][:-4] + ("AAAA" if not tokens[1].endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            codec.verify(forged)
    assert forged not in codec._verified
