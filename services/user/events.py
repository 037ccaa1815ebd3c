"""The user service's domain events, as its repository writes them to the outbox."""

import uuid

from google.protobuf.message import Message

from nova.events.v1 import events_pb2
from services.runtime.events.envelope import new_event
from services.runtime.events.model import Event

AGGREGATE = "user"
"""The aggregate of every event here (topic nova.user.v1), keyed by the acting user."""


def _user_event(tenant_id: uuid.UUID, user_id: uuid.UUID, payload: Message) -> Event:
    """An event whose aggregate is the user who acted (the follower, for a follow), so a
    consumer receives each user's events in the order their changes committed."""
    return new_event(
        tenant_id=tenant_id, aggregate_type=AGGREGATE, aggregate_id=user_id, payload=payload
    )


def user_created(tenant_id: uuid.UUID, user_id: uuid.UUID, handle: str) -> Event:
    return _user_event(
        tenant_id, user_id, events_pb2.UserCreated(user_id=str(user_id), handle=handle)
    )


def followed(tenant_id: uuid.UUID, follower_id: uuid.UUID, followee_id: uuid.UUID) -> Event:
    return _user_event(
        tenant_id,
        follower_id,
        events_pb2.Followed(follower_id=str(follower_id), followee_id=str(followee_id)),
    )


def unfollowed(tenant_id: uuid.UUID, follower_id: uuid.UUID, followee_id: uuid.UUID) -> Event:
    return _user_event(
        tenant_id,
        follower_id,
        events_pb2.Unfollowed(follower_id=str(follower_id), followee_id=str(followee_id)),
    )


def preferences_updated(
    tenant_id: uuid.UUID, user_id: uuid.UUID, changed_fields: list[str]
) -> Event:
    return _user_event(
        tenant_id,
        user_id,
        events_pb2.PreferencesUpdated(user_id=str(user_id), changed_fields=changed_fields),
    )
