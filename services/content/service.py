"""The content service's SPEC: what the runtime needs to migrate, serve and call it."""

from pathlib import Path

from grpc import aio

from nova.content.v1 import content_pb2, content_pb2_grpc
from services.content import events
from services.content.repository import SCHEMA, ContentRepository
from services.content.servicer import ContentServicer
from services.runtime.spec import Dependencies, ServiceSpec
from services.runtime.validation import validated

_SERVICE = content_pb2.DESCRIPTOR.services_by_name["ContentService"]


def _add_to_server(server: aio.Server, deps: Dependencies) -> None:
    servicer = ContentServicer(ContentRepository(deps.db))
    content_pb2_grpc.add_ContentServiceServicer_to_server(validated(servicer, _SERVICE), server)


SPEC = ServiceSpec(
    name="content",
    service=_SERVICE,
    stub=content_pb2_grpc.ContentServiceStub,
    default_port=50052,
    schema=SCHEMA,
    migrations=Path(__file__).parent / "migrations",
    add_to_server=_add_to_server,
    aggregate_types=(events.AGGREGATE,),
)
