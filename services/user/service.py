"""Declares the user service to the runtime: its schema, migrations and wiring."""

from pathlib import Path

from grpc import aio

from nova.user.v1 import user_pb2_grpc
from services.runtime.service import Dependencies, ServiceSpec
from services.user.passwords import Passwords
from services.user.repository import UserRepository
from services.user.servicer import UserServicer


def _add_to_server(server: aio.Server, deps: Dependencies) -> None:
    servicer = UserServicer(
        UserRepository(deps.db), Passwords(deps.config.password_hash_profile), deps.tokens
    )
    user_pb2_grpc.add_UserServiceServicer_to_server(servicer, server)


SPEC = ServiceSpec(
    name="user",
    full_name="nova.user.v1.UserService",
    schema="user_service",
    migrations=Path(__file__).parent / "migrations",
    add_to_server=_add_to_server,
)
