"""Generated stubs on top of a client, and which methods count as reads."""

from __future__ import annotations

from typing import Any

import pytest

from interceptors.client.call import Invoke, OutgoingCall
from interceptors.client.channel_pool import ChannelPool, PoolSettings
from interceptors.client.stack import Client, reads
from nova.content.v1 import content_pb2
from nova.user.v1 import user_pb2, user_pb2_grpc
from tests.integration.test_client_fakes import USER_SERVICE


class Answer:
    """A layer that records the call and answers without sending it."""

    def __init__(self) -> None:
        self.calls: list[OutgoingCall] = []

    async def __call__(self, call: OutgoingCall, proceed: Invoke) -> Any:
        self.calls.append(call)
        return user_pb2.GetUserResponse(user=user_pb2.User(handle="grace"))


async def test_a_stub_calls_through_the_chain_with_the_generated_serializers() -> None:
    answer = Answer()
    pool = ChannelPool(["127.0.0.1:1"], PoolSettings(channels=1))
    async with Client("users", pool, [answer], reads(USER_SERVICE)) as client:
        users = client.stub(user_pb2_grpc.UserServiceStub)
        reply = await users.GetUser(
            user_pb2.GetUserRequest(handle="grace"), timeout=2, metadata=(("k", "v"),)
        )
        await users.UpdateProfile(user_pb2.UpdateProfileRequest(), timeout=2)
    assert reply.user.handle == "grace"
    get, update = answer.calls
    assert (get.method, get.timeout, get.metadata, get.idempotent) == (
        "/nova.user.v1.UserService/GetUser",
        2,
        (("k", "v"),),
        True,
    )
    assert get.request_serializer is not None
    assert get.request_serializer(get.request) == get.request.SerializeToString()
    assert (update.method, update.idempotent) == ("/nova.user.v1.UserService/UpdateProfile", False)


async def test_streaming_methods_say_they_are_not_supported() -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    pool = ChannelPool(["127.0.0.1:1"], PoolSettings(channels=1))
    async with Client("health", pool, [Answer()], frozenset()) as client:
        health = client.stub(health_pb2_grpc.HealthStub)
        with pytest.raises(TypeError, match="Watch streams"):
            health.Watch(health_pb2.HealthCheckRequest())


def test_reads_are_the_get_list_and_batch_get_methods() -> None:
    assert reads(USER_SERVICE) == {
        "/nova.user.v1.UserService/GetUser",
        "/nova.user.v1.UserService/BatchGetUsers",
        "/nova.user.v1.UserService/ListFollowing",
        "/nova.user.v1.UserService/ListFollowers",
        "/nova.user.v1.UserService/GetPreferences",
    }
    content = reads(content_pb2.DESCRIPTOR.services_by_name["ContentService"])
    assert "/nova.content.v1.ContentService/BatchListComments" in content
    assert not any("Create" in name or "Like" in name for name in content)
