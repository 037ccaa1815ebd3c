"""The content service's domain events, as its repository writes them to the outbox."""

import uuid

from google.protobuf.message import Message

from nova.events.v1 import events_pb2
from services.runtime.events.envelope import new_event
from services.runtime.events.model import Event

AGGREGATE = "post"
"""The aggregate of every event here (topic nova.post.v1): the post, for comments and
likes too."""


def _post_event(tenant_id: uuid.UUID, post_id: uuid.UUID, payload: Message) -> Event:
    """An event whose aggregate is the post (comments and likes included), so a consumer
    receives a post's events in the order they committed: never a like before its post."""
    return new_event(
        tenant_id=tenant_id, aggregate_type=AGGREGATE, aggregate_id=post_id, payload=payload
    )


def post_created(tenant_id: uuid.UUID, post_id: uuid.UUID, author_id: uuid.UUID) -> Event:
    return _post_event(
        tenant_id,
        post_id,
        events_pb2.PostCreated(post_id=str(post_id), author_id=str(author_id)),
    )


def post_deleted(tenant_id: uuid.UUID, post_id: uuid.UUID, author_id: uuid.UUID) -> Event:
    return _post_event(
        tenant_id,
        post_id,
        events_pb2.PostDeleted(post_id=str(post_id), author_id=str(author_id)),
    )


def comment_created(
    tenant_id: uuid.UUID, comment_id: uuid.UUID, post_id: uuid.UUID, author_id: uuid.UUID
) -> Event:
    return _post_event(
        tenant_id,
        post_id,
        events_pb2.CommentCreated(
            comment_id=str(comment_id), post_id=str(post_id), author_id=str(author_id)
        ),
    )


def post_liked(tenant_id: uuid.UUID, post_id: uuid.UUID, user_id: uuid.UUID) -> Event:
    return _post_event(
        tenant_id, post_id, events_pb2.PostLiked(post_id=str(post_id), user_id=str(user_id))
    )


def post_unliked(tenant_id: uuid.UUID, post_id: uuid.UUID, user_id: uuid.UUID) -> Event:
    return _post_event(
        tenant_id, post_id, events_pb2.PostUnliked(post_id=str(post_id), user_id=str(user_id))
    )
