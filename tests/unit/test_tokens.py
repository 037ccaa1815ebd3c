"""Access tokens verify only with the right key and only until they expire."""

import uuid
from datetime import timedelta

import pytest

from services.runtime.auth import Caller, TokenCodec
from services.runtime.errors import Unauthenticated

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
