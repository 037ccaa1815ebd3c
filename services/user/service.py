"""The user service's SPEC: what the runtime needs to migrate, serve and call it."""

from pathlib import Path

from grpc import aio

from nova.user.v1 import user_pb2, user_pb2_grpc
from services.runtime.spec import Dependencies, ServiceSpec
from services.runtime.validation import validated
from services.user import events
from services.user.passwords import Passwords
from services.user.repository import SCHEMA, UserRepository
from services.user.servicer import UserServicer
from services.user.sign_in_limits import SignInLimits

_SERVICE = user_pb2.DESCRIPTOR.services_by_name["UserService"]


def _add_to_server(server: aio.Server, deps: Dependencies) -> None:
    sign_in = deps.config.sign_in
    passwords = Passwords.for_profile(
        deps.config.password_hash_profile,
        concurrency=sign_in.hash_concurrency,
        queue=sign_in.hash_queue,
    )
    servicer = UserServicer(UserRepository(deps.db), passwords, deps.tokens, SignInLimits(sign_in))
    user_pb2_grpc.add_UserServiceServicer_to_server(validated(servicer, _SERVICE), server)


SPEC = ServiceSpec(
    name="user",
    service=_SERVICE,
    stub=user_pb2_grpc.UserServiceStub,
    default_port=50051,
    schema=SCHEMA,
    migrations=Path(__file__).parent / "migrations",
    add_to_server=_add_to_server,
    aggregate_types=(events.AGGREGATE,),
)
