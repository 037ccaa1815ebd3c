"""The registry refuses specs that would share a port, a schema, a topic or a group, and
derives what the process reads from it: ports, topics, the outboxes to relay."""

from dataclasses import replace

import pytest

from nova.events.v1 import events_pb2
from services.audit.service import SPEC as AUDIT
from services.content.service import SPEC as CONTENT
from services.registry import REGISTRY
from services.runtime.events.envelope import new_event
from services.runtime.ids import DEFAULT_TENANT_ID, new_id
from services.runtime.spec import Registry
from services.user.service import SPEC as USER


def test_the_build_registers_its_services_and_derives_ports_topics_and_outboxes() -> None:
    assert list(REGISTRY.services) == ["user", "content", "feed", "analytics", "tenant"]
    assert REGISTRY.default_ports == {
        "user": 50051,
        "content": 50052,
        "feed": 50053,
        "analytics": 50054,
        "tenant": 50055,
    }
    assert REGISTRY.topics == ("nova.user.v1", "nova.post.v1")
    assert REGISTRY.outbox_schemas == ["user_service", "content_service"]
    assert list(REGISTRY.consumers) == [
        "audit",
        "user-cache",
        "content-cache",
        "feed",
        "analytics",
    ]


@pytest.mark.parametrize(
    ("clash", "message"),
    [
        (replace(CONTENT, name="user"), "service name: user"),
        (replace(CONTENT, default_port=50051), "default port: 50051"),
        (replace(CONTENT, schema="user_service"), "schema: user_service"),
        (replace(CONTENT, aggregate_types=("user",)), "aggregate type: user"),
        (replace(CONTENT, consumers=(replace(AUDIT, schema="x"),)), "consumer group: audit"),
    ],
)
def test_two_specs_may_not_share_what_names_them(clash: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"share a {message}"):
        Registry.of([USER, clash], [AUDIT])  # type: ignore[list-item]


def test_names_and_aggregate_types_must_be_identifiers() -> None:
    with pytest.raises(ValueError, match="'Post-Type' must be a lowercase identifier"):
        Registry.of([replace(CONTENT, aggregate_types=("Post-Type",))])


def test_an_event_names_an_aggregate_type_a_topic_can_carry() -> None:
    payload = events_pb2.UserCreated(user_id="u", handle="h")
    event = new_event(
        tenant_id=DEFAULT_TENANT_ID, aggregate_type="user", aggregate_id=new_id(), payload=payload
    )
    assert event.topic == "nova.user.v1"
    with pytest.raises(ValueError, match="must be a lowercase identifier"):
        new_event(
            tenant_id=DEFAULT_TENANT_ID, aggregate_type="a.b", aggregate_id="x", payload=payload
        )
