"""What every resolver of one request shares: the viewer, the backend calls, the loaders."""

from dataclasses import dataclass

from graphql import GraphQLResolveInfo

from gateway.auth import Viewer
from gateway.clients import Backend
from gateway.errors import Unauthenticated
from gateway.loaders import Loaders


@dataclass(frozen=True)
class RequestContext:
    backend: Backend
    loaders: Loaders
    viewer: Viewer | None

    def require_viewer(self) -> Viewer:
        if self.viewer is None:
            raise Unauthenticated(
                "this field needs a signed-in user: send 'Authorization: Bearer <token>' "
                "with a token from logIn or signUp"
            )
        return self.viewer


Info = GraphQLResolveInfo[RequestContext]
"""What resolvers get as `info`; the Executor passes a RequestContext as the context."""
