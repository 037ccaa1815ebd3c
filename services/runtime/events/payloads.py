"""An event's payload as plain fields, for consumers that keep events of every type
(the audit log, analytics) without a case per type."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool, json_format, message_factory

from nova.events.v1 import events_pb2


def payload_fields(envelope: events_pb2.EventEnvelope) -> dict[str, Any]:
    """The payload's fields as JSON, by proto field name: {"post_id": …, "author_id": …}
    (fields at their default value are included, so every event of a type has the same
    keys). A payload type this build does not know (a newer producer's) raises
    LookupError, saying to upgrade and replay."""
    type_name = envelope.payload.TypeName()
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
    except KeyError:
        raise LookupError(
            f"payload type {type_name!r} is unknown to this build; upgrade, then replay "
            "the dead letter"
        ) from None
    payload = message_factory.GetMessageClass(descriptor)()
    if not envelope.payload.Unpack(payload):
        raise ValueError(f"the payload is not a {type_name}")
    return json_format.MessageToDict(
        payload, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
