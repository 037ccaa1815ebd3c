"""The executable schema: the `.graphql` files beside this module, bound to the resolvers.

`version` is a hash of the schema text: cached documents were validated against one
version of the schema and are never used with another.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ariadne import load_schema_from_path, make_executable_schema
from graphql import GraphQLSchema

from gateway.resolvers import BINDABLES

SCHEMA_DIRECTORY = Path(__file__).parent


@dataclass(frozen=True)
class Schema:
    graphql: GraphQLSchema
    version: str


def build_schema() -> Schema:
    type_defs = load_schema_from_path(SCHEMA_DIRECTORY)
    return Schema(
        graphql=make_executable_schema(type_defs, *BINDABLES, convert_names_case=True),
        version=hashlib.sha256(type_defs.encode()).hexdigest()[:16],
    )
