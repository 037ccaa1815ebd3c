"""UserService and ContentService write each change's domain event to their outbox.

Through the real servers and PostgreSQL: every change writes exactly one outbox row whose
envelope decodes to the right payload, a call that changes nothing or fails writes none,
the caller's trace reaches the envelope, and a rolled-back transaction leaves no event.
Rows are read by aggregate id (or event id), since the database is shared by the session.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from grpc import aio

from nova.content.v1 import content_pb2, content_pb2_grpc
from nova.events.v1 import events_pb2
from nova.user.v1 import user_pb2
from services.runtime.db import Database
from services.runtime.events import outbox
from services.runtime.events.envelope import new_event
from services.runtime.events.model import Event
from services.runtime.ids import DEFAULT_TENANT_ID, new_id
from services.runtime.spec import Dependencies
from tests.conftest import SignedIn, SignUp, status_of

if TYPE_CHECKING:
    from nova.content.v1.content_pb2_grpc import ContentServiceAsyncStub
    from nova.user.v1.user_pb2_grpc import UserServiceAsyncStub

USER = "user_service"
CONTENT = "content_service"

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"

M = TypeVar("M", bound=Message)


@pytest.fixture(scope="session")
def content(channels: dict[str, aio.Channel]) -> ContentServiceAsyncStub:
    return content_pb2_grpc.ContentServiceStub(channels["content"])


async def outbox_rows(db: Database, schema: str, aggregate_id: str) -> list[asyncpg.Record]:
    """The aggregate's outbox rows, in the order they were written."""
    async with db.connection() as conn:
        return await conn.fetch(
            f"""SELECT event_id, tenant_id, aggregate_type, aggregate_id, event_type,
                       occurred_at, envelope
                FROM {schema}.outbox WHERE aggregate_id = $1 ORDER BY id""",
            aggregate_id,
        )


async def event_types(db: Database, schema: str, aggregate_id: str) -> list[str]:
    """What a sequence of calls left in the outbox: one entry per event, in order."""
    return [row["event_type"] for row in await outbox_rows(db, schema, aggregate_id)]


def unpacked(
    row: asyncpg.Record, aggregate_type: str, payload_type: type[M]
) -> tuple[events_pb2.EventEnvelope, M]:
    """The row's envelope and payload, after checking that the envelope says what the
    row's columns say (the relay routes on the columns, consumers read the envelope)."""
    event = Event.from_envelope(row["envelope"])
    assert event.event_id == row["event_id"]
    assert event.event_type == row["event_type"] == payload_type.DESCRIPTOR.name
    assert event.aggregate_type == row["aggregate_type"] == aggregate_type
    assert event.aggregate_id == row["aggregate_id"]
    assert event.tenant_id == row["tenant_id"] == DEFAULT_TENANT_ID
    assert event.occurred_at == row["occurred_at"]
    assert event.event_id.version == 7
    envelope = event.decode()
    payload = payload_type()
    assert envelope.payload.Unpack(payload), envelope.payload.type_url
    return envelope, payload


async def the_event(
    db: Database, schema: str, aggregate_id: str, payload_type: type[M]
) -> tuple[events_pb2.EventEnvelope, M]:
    """The aggregate's only event of this type (failing if there are none or several)."""
    aggregate_type = "user" if schema == USER else "post"
    rows = await outbox_rows(db, schema, aggregate_id)
    (row,) = [row for row in rows if row["event_type"] == payload_type.DESCRIPTOR.name]
    return unpacked(row, aggregate_type, payload_type)


async def fails(call: Awaitable[Any], code: grpc.StatusCode) -> None:
    """Awaits an RPC that must fail with `code`."""
    with pytest.raises(aio.AioRpcError) as error:
        await call
    assert status_of(error)[0] == code, status_of(error)


def traced(who: SignedIn) -> tuple[tuple[str, str], ...]:
    return (*who.metadata, ("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"))


async def publish(content: ContentServiceAsyncStub, author: SignedIn) -> content_pb2.Post:
    response = await content.CreatePost(
        content_pb2.CreatePostRequest(text="an event"), metadata=author.metadata
    )
    return response.post


# UserService


async def test_create_user_writes_user_created(deps: Dependencies, sign_up: SignUp) -> None:
    alice = await sign_up()
    assert await event_types(deps.db, USER, alice.user.id) == ["UserCreated"]
    envelope, created = await the_event(deps.db, USER, alice.user.id, events_pb2.UserCreated)
    assert (created.user_id, created.handle) == (alice.user.id, alice.user.handle)
    assert envelope.aggregate_id == alice.user.id


async def test_a_refused_create_user_writes_nothing(
    deps: Dependencies, users: UserServiceAsyncStub, sign_up: SignUp
) -> None:
    started = datetime.now(UTC)
    alice = await sign_up()
    fresh = "fresh_" + uuid.uuid4().hex[:10]
    for request in (
        user_pb2.CreateUserRequest(
            handle=alice.user.handle.upper(), email=f"{fresh}@example.com", password="longenough"
        ),
        user_pb2.CreateUserRequest(
            handle=fresh, email=f"{alice.user.handle}@example.com", password="longenough"
        ),
    ):
        await fails(users.CreateUser(request), grpc.StatusCode.ALREADY_EXISTS)
    # The refused users never got an id, so their events are looked for by handle.
    async with deps.db.connection() as conn:
        rows = await conn.fetch(
            f"""SELECT event_id, tenant_id, aggregate_type, aggregate_id, event_type,
                       occurred_at, envelope
                FROM {USER}.outbox WHERE event_type = 'UserCreated' AND occurred_at >= $1""",
            started,
        )
    handles = [unpacked(row, "user", events_pb2.UserCreated)[1].handle.lower() for row in rows]
    assert handles.count(alice.user.handle.lower()) == 1
    assert fresh not in handles


async def test_follow_and_unfollow_write_events_only_when_the_graph_changes(
    deps: Dependencies, users: UserServiceAsyncStub, sign_up: SignUp
) -> None:
    alice, bob = await sign_up(), await sign_up()
    follow = user_pb2.FollowRequest(user_id=bob.user.id)
    unfollow = user_pb2.UnfollowRequest(user_id=bob.user.id)

    assert (await users.Follow(follow, metadata=alice.metadata)).changed
    assert not (await users.Follow(follow, metadata=alice.metadata)).changed
    _, followed = await the_event(deps.db, USER, alice.user.id, events_pb2.Followed)
    assert (followed.follower_id, followed.followee_id) == (alice.user.id, bob.user.id)

    assert (await users.Unfollow(unfollow, metadata=alice.metadata)).changed
    assert not (await users.Unfollow(unfollow, metadata=alice.metadata)).changed
    _, unfollowed = await the_event(deps.db, USER, alice.user.id, events_pb2.Unfollowed)
    assert (unfollowed.follower_id, unfollowed.followee_id) == (alice.user.id, bob.user.id)

    # Events belong to the follower's aggregate: the followee's has only its creation.
    assert await event_types(deps.db, USER, alice.user.id) == [
        "UserCreated",
        "Followed",
        "Unfollowed",
    ]
    assert await event_types(deps.db, USER, bob.user.id) == ["UserCreated"]


async def test_a_refused_follow_writes_nothing(
    deps: Dependencies, users: UserServiceAsyncStub, sign_up: SignUp
) -> None:
    alice = await sign_up()
    ghost = str(uuid.uuid4())
    await fails(
        users.Follow(user_pb2.FollowRequest(user_id=ghost), metadata=alice.metadata),
        grpc.StatusCode.NOT_FOUND,
    )
    await fails(
        users.Unfollow(user_pb2.UnfollowRequest(user_id=ghost), metadata=alice.metadata),
        grpc.StatusCode.NOT_FOUND,
    )
    await fails(
        users.Follow(user_pb2.FollowRequest(user_id=alice.user.id), metadata=alice.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert await event_types(deps.db, USER, alice.user.id) == ["UserCreated"]


async def test_preferences_updated_names_only_the_fields_whose_value_changed(
    deps: Dependencies, users: UserServiceAsyncStub, sign_up: SignUp
) -> None:
    alice = await sign_up()

    async def update(paths: list[str], **values: object) -> None:
        await users.UpdatePreferences(
            user_pb2.UpdatePreferencesRequest(
                preferences=user_pb2.Preferences(**values),  # type: ignore[arg-type]
                update_mask=FieldMask(paths=paths),
            ),
            metadata=alice.metadata,
        )

    # Setting the default language stores the preferences but changes no value.
    await update(["language"], language="en")
    assert await event_types(deps.db, USER, alice.user.id) == ["UserCreated"]

    await update(
        ["language", "time_zone", "interests"],
        language="en",
        time_zone="Europe/Lisbon",
        interests=["go", "rust"],
    )
    _, updated = await the_event(deps.db, USER, alice.user.id, events_pb2.PreferencesUpdated)
    assert updated.user_id == alice.user.id
    assert list(updated.changed_fields) == ["time_zone", "interests"]

    # The same values again, and a refused value: nothing more.
    await update(["time_zone", "interests"], time_zone="Europe/Lisbon", interests=["go", "rust"])
    await fails(
        users.UpdatePreferences(
            user_pb2.UpdatePreferencesRequest(
                preferences=user_pb2.Preferences(time_zone="Mars/Olympus"),
                update_mask=FieldMask(paths=["time_zone"]),
            ),
            metadata=alice.metadata,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert await event_types(deps.db, USER, alice.user.id) == ["UserCreated", "PreferencesUpdated"]

    await update(["email_notifications"], email_notifications=False)
    rows = await outbox_rows(deps.db, USER, alice.user.id)
    assert [row["event_type"] for row in rows] == [
        "UserCreated",
        "PreferencesUpdated",
        "PreferencesUpdated",
    ]
    _, latest = unpacked(rows[-1], "user", events_pb2.PreferencesUpdated)
    assert list(latest.changed_fields) == ["email_notifications"]


async def test_a_user_event_carries_the_callers_trace(
    deps: Dependencies, users: UserServiceAsyncStub, sign_up: SignUp
) -> None:
    alice, bob = await sign_up(), await sign_up()
    await users.Follow(user_pb2.FollowRequest(user_id=bob.user.id), metadata=traced(alice))
    envelope, _ = await the_event(deps.db, USER, alice.user.id, events_pb2.Followed)
    version, trace_id, span_id, _flags = envelope.traceparent.split("-")
    assert (version, trace_id, len(span_id)) == ("00", TRACE_ID, 16)


# ContentService


async def test_post_created_and_deleted_once(
    deps: Dependencies, content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    alice, bob = await sign_up(), await sign_up()
    post = await publish(content, alice)
    _, created = await the_event(deps.db, CONTENT, post.id, events_pb2.PostCreated)
    assert (created.post_id, created.author_id) == (post.id, alice.user.id)

    delete = content_pb2.DeletePostRequest(id=post.id)
    await fails(
        content.DeletePost(delete, metadata=bob.metadata), grpc.StatusCode.PERMISSION_DENIED
    )
    assert await event_types(deps.db, CONTENT, post.id) == ["PostCreated"]

    await content.DeletePost(delete, metadata=alice.metadata)
    await fails(content.DeletePost(delete, metadata=alice.metadata), grpc.StatusCode.NOT_FOUND)
    _, deleted = await the_event(deps.db, CONTENT, post.id, events_pb2.PostDeleted)
    assert (deleted.post_id, deleted.author_id) == (post.id, alice.user.id)
    assert await event_types(deps.db, CONTENT, post.id) == ["PostCreated", "PostDeleted"]


async def test_comment_created_belongs_to_the_posts_aggregate(
    deps: Dependencies, content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    alice, bob = await sign_up(), await sign_up()
    post = await publish(content, alice)
    response = await content.CreateComment(
        content_pb2.CreateCommentRequest(post_id=post.id, text="nice"), metadata=bob.metadata
    )
    _, created = await the_event(deps.db, CONTENT, post.id, events_pb2.CommentCreated)
    assert (created.comment_id, created.post_id, created.author_id) == (
        response.comment.id,
        post.id,
        bob.user.id,
    )
    assert await event_types(deps.db, CONTENT, post.id) == ["PostCreated", "CommentCreated"]
    assert await outbox_rows(deps.db, CONTENT, response.comment.id) == []


async def test_like_and_unlike_write_events_only_when_the_like_changes(
    deps: Dependencies, content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    alice, bob = await sign_up(), await sign_up()
    post = await publish(content, alice)
    like = content_pb2.LikePostRequest(post_id=post.id)
    unlike = content_pb2.UnlikePostRequest(post_id=post.id)

    assert (await content.LikePost(like, metadata=bob.metadata)).changed
    assert not (await content.LikePost(like, metadata=bob.metadata)).changed
    _, liked = await the_event(deps.db, CONTENT, post.id, events_pb2.PostLiked)
    assert (liked.post_id, liked.user_id) == (post.id, bob.user.id)

    assert (await content.UnlikePost(unlike, metadata=bob.metadata)).changed
    assert not (await content.UnlikePost(unlike, metadata=bob.metadata)).changed
    _, unliked = await the_event(deps.db, CONTENT, post.id, events_pb2.PostUnliked)
    assert (unliked.post_id, unliked.user_id) == (post.id, bob.user.id)

    assert await event_types(deps.db, CONTENT, post.id) == [
        "PostCreated",
        "PostLiked",
        "PostUnliked",
    ]


async def test_refused_content_calls_write_nothing(
    deps: Dependencies, content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    alice = await sign_up()
    ghost = str(uuid.uuid4())
    await fails(
        content.LikePost(content_pb2.LikePostRequest(post_id=ghost), metadata=alice.metadata),
        grpc.StatusCode.NOT_FOUND,
    )
    await fails(
        content.UnlikePost(content_pb2.UnlikePostRequest(post_id=ghost), metadata=alice.metadata),
        grpc.StatusCode.NOT_FOUND,
    )
    await fails(
        content.CreateComment(
            content_pb2.CreateCommentRequest(post_id=ghost, text="hello?"), metadata=alice.metadata
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await fails(
        content.DeletePost(content_pb2.DeletePostRequest(id=ghost), metadata=alice.metadata),
        grpc.StatusCode.NOT_FOUND,
    )
    assert await outbox_rows(deps.db, CONTENT, ghost) == []


async def test_a_post_event_carries_the_callers_trace(
    deps: Dependencies, content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    alice = await sign_up()
    response = await content.CreatePost(
        content_pb2.CreatePostRequest(text="traced"), metadata=traced(alice)
    )
    envelope, _ = await the_event(deps.db, CONTENT, response.post.id, events_pb2.PostCreated)
    version, trace_id, span_id, _flags = envelope.traceparent.split("-")
    assert (version, trace_id, len(span_id)) == ("00", TRACE_ID, 16)


# The outbox itself


class _RolledBack(Exception):
    """Raised inside a transaction to roll it back."""


async def test_a_rolled_back_change_leaves_no_event(deps: Dependencies) -> None:
    post_id, author_id = new_id(), new_id()
    event = new_event(
        tenant_id=DEFAULT_TENANT_ID,
        aggregate_type="post",
        aggregate_id=post_id,
        payload=events_pb2.PostCreated(post_id=str(post_id), author_id=str(author_id)),
    )
    count_events = f"SELECT count(*) FROM {CONTENT}.outbox WHERE event_id = $1"

    async def change_then_fail() -> None:
        async with deps.db.transaction() as conn:
            await conn.execute(
                f"INSERT INTO {CONTENT}.posts (tenant_id, id, author_id, text) "
                "VALUES ($1, $2, $3, 'never')",
                DEFAULT_TENANT_ID,
                post_id,
                author_id,
            )
            await outbox.append(conn, CONTENT, [event])
            # Written, as far as the transaction can see...
            assert await conn.fetchval(count_events, event.event_id) == 1
            raise _RolledBack

    with pytest.raises(_RolledBack):
        await change_then_fail()
    # ...and gone with the change.
    async with deps.db.connection() as conn:
        assert await conn.fetchval(count_events, event.event_id) == 0
        assert not await conn.fetchval(
            f"SELECT true FROM {CONTENT}.posts WHERE tenant_id = $1 AND id = $2",
            DEFAULT_TENANT_ID,
            post_id,
        )
