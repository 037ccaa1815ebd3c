"""Resolvers, one module per GraphQL type (homeFeed has its own: it stands in for the
feed service), bound to the schema by BINDABLES."""

from ariadne import SchemaBindable

from gateway.resolvers.feed import feed_query
from gateway.resolvers.mutation import mutation
from gateway.resolvers.post import comment, post
from gateway.resolvers.query import query
from gateway.resolvers.scalars import date_time
from gateway.resolvers.user import user

BINDABLES: list[SchemaBindable] = [query, feed_query, mutation, user, post, comment, date_time]
