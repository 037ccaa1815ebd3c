"""Declares the content service to the runtime: its schema, migrations and wiring."""

from pathlib import Path

from grpc import aio

from nova.content.v1 import content_pb2_grpc
from services.content.repository import ContentRepository
from services.content.servicer import ContentServicer
from services.runtime.service import Dependencies, ServiceSpec


def _add_to_server(server: aio.Server, deps: Dependencies) -> None:
    servicer = ContentServicer(ContentRepository(deps.db))
    content_pb2_grpc.add_ContentServiceServicer_to_server(servicer, server)


SPEC = ServiceSpec(
    name="content",
    full_name="nova.content.v1.ContentService",
    schema="content_service",
    migrations=Path(__file__).parent / "migrations",
    add_to_server=_add_to_server,
)
