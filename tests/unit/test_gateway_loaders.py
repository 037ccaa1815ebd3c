"""DataLoaders and the per-request backend against stand-in stubs that record each call:
batches split at the RPC's maximum, failed batches are retried, every call carries the
request's deadline and Authorization header."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import grpc
import pytest
from grpc import aio

from gateway.clients import Backend, Clients, RpcCounter
from gateway.errors import BackendError, NotFound
from gateway.loaders import Loaders, itself, settled
from nova.user.v1 import user_pb2
from tests.bench.per_field import PerFieldLoaders


class FakeUsers:
    """Answers BatchGetUsers for every id except "missing"; fails while `failures` > 0."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[tuple[list[str], float, Any]] = []

    async def BatchGetUsers(
        self, request: user_pb2.BatchGetUsersRequest, **options: Any
    ) -> user_pb2.BatchGetUsersResponse:
        self.calls.append((list(request.ids), options["timeout"], options["metadata"]))
        await asyncio.sleep(0)
        if self.failures:
            self.failures -= 1
            raise aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, aio.Metadata(), aio.Metadata(), "down", None
            )
        return user_pb2.BatchGetUsersResponse(
            users=[user_pb2.User(id=i) for i in request.ids if i != "missing"],
            missing_ids=[i for i in request.ids if i == "missing"],
        )


def loaders_over(
    users: FakeUsers, *, kind: type[Loaders] = Loaders, authorization: str | None = None
) -> Loaders:
    clients = Clients(
        stubs={"user": users, "content": None, "feed": None, "analytics": None},
        counter=RpcCounter(),
    )
    backend = Backend(clients, authorization=authorization, deadline=time.monotonic() + 5)
    return kind(backend)


async def test_loads_of_one_tick_go_out_as_one_batch_split_at_100_ids() -> None:
    users = FakeUsers()
    loaders = loaders_over(users)
    ids = [f"u{i}" for i in range(250)]

    found = await asyncio.gather(*(loaders.users.load(i) for i in ids + ids))

    assert [user.id for user in found] == ids + ids
    assert [len(batch) for batch, _, _ in users.calls] == [100, 100, 50]


async def test_a_missing_key_fails_alone() -> None:
    loaders = loaders_over(FakeUsers())
    found, missing = await asyncio.gather(
        loaders.users.load("u1"), loaders.users.load("missing"), return_exceptions=True
    )
    assert isinstance(found, user_pb2.User)
    assert isinstance(missing, NotFound)


async def test_a_failed_batch_is_not_kept_so_the_next_load_calls_again() -> None:
    users = FakeUsers(failures=1)
    loaders = loaders_over(users)

    with pytest.raises(BackendError) as failed:
        await loaders.users.load("u1")
    assert failed.value.extensions["code"] == "UNAVAILABLE"
    assert (await loaders.users.load("u1")).id == "u1"
    assert len(users.calls) == 2


async def test_a_finished_load_is_answered_at_once_and_a_pending_one_later() -> None:
    users = FakeUsers()
    loaders = loaders_over(users)
    pending = settled(loaders.users.load("u1"), itself)
    assert inspect.isawaitable(pending)
    assert (await pending).id == "u1"

    ready = settled(loaders.users.load("u1"), lambda user: user.id)

    assert ready == "u1"  # a value, not an awaitable: graphql-core completes it in place
    assert len(users.calls) == 1


async def test_a_finished_load_that_failed_raises_its_error_at_once() -> None:
    loaders = loaders_over(FakeUsers())
    with pytest.raises(NotFound):
        await loaders.users.load("missing")
    with pytest.raises(NotFound):
        settled(loaders.users.load("missing"), itself)


async def test_the_benchmarks_per_field_loaders_make_every_load_its_own_call() -> None:
    users = FakeUsers()
    loaders = loaders_over(users, kind=PerFieldLoaders)
    await asyncio.gather(*(loaders.users.load("u1") for _ in range(3)))
    assert [batch for batch, _, _ in users.calls] == [["u1"]] * 3


async def test_every_call_gets_the_time_left_and_the_callers_header() -> None:
    users = FakeUsers()
    loaders = loaders_over(users, authorization="Bearer t0ken")
    await loaders.users.load("u1")
    await asyncio.sleep(0.05)
    await loaders.users.load("u2")

    (_, first_timeout, metadata), (_, second_timeout, _) = users.calls
    assert metadata == (("authorization", "Bearer t0ken"),)
    assert 4.9 < first_timeout <= 5
    assert second_timeout <= first_timeout - 0.05


async def test_no_call_is_made_once_the_deadline_has_passed() -> None:
    users = FakeUsers()
    clients = Clients(
        stubs={"user": users, "content": None, "feed": None, "analytics": None},
        counter=RpcCounter(),
    )
    backend = Backend(clients, authorization=None, deadline=time.monotonic() - 1)
    with pytest.raises(BackendError) as late:
        await Loaders(backend).users.load("u1")
    assert late.value.extensions["code"] == "DEADLINE_EXCEEDED"
    assert users.calls == []
