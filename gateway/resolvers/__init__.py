"""Resolvers, one module per GraphQL type (homeFeed has its own: it stands in for the
feed service; so do trendingPosts and recordImpressions for the analytics service), bound
to the schema by BINDABLES."""

from ariadne import SchemaBindable

from gateway.resolvers.analytics import analytics_mutation, analytics_query
from gateway.resolvers.feed import feed_query
from gateway.resolvers.mutation import mutation
from gateway.resolvers.post import comment, post
from gateway.resolvers.query import query
from gateway.resolvers.scalars import date_time
from gateway.resolvers.user import user

BINDABLES: list[SchemaBindable] = [
    query,
    feed_query,
    analytics_query,
    mutation,
    analytics_mutation,
    user,
    post,
    comment,
    date_time,
]
