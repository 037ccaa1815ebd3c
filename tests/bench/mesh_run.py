"""How to run GraphQL Mesh (Hive Gateway) beside Nova, for issue 17's comparison.

The supergraph in tests/bench/mesh is composed once from the proto files and keeps the
services' endpoints as {env.NOVA_*_ADDR} templates, so pointing Mesh at a bench's services
needs only environment variables, not a new composition. `npm ci` must have run in
tests/bench/mesh (see its README.md).
"""

from __future__ import annotations

import os
from pathlib import Path

MESH_DIR = Path(__file__).resolve().parent / "mesh"

# Keys of `addresses` (Nova's service names) to the variables the supergraph reads.
_ADDRESS_VARIABLES = {
    "user": "NOVA_USER_ADDR",
    "content": "NOVA_CONTENT_ADDR",
    "feed": "NOVA_FEED_ADDR",
}

# The page of tests/bench/feed.py's FEED_QUERY in Mesh's generated schema: the same posts,
# authors, stats and 3 latest comments with their authors. author_id is selected because
# Mesh does not add the key of a nested @resolveTo hop by itself (author would be null).
# Mesh has no cursor per edge; item_tokens are the per-item page tokens.
query = (
    "query HomeFeed($first: Int!) { nova_feed_v1_FeedService_GetHomeFeed("
    "input: { page: { page_size: $first } }) { items { post { id text author_id "
    "created_at { seconds nanos } author { id handle display_name } "
    "stats { like_count comment_count viewer_has_liked } "
    "latestComments { comments { id text author_id created_at { seconds nanos } "
    "author { id handle display_name } } } } } page { next_page_token item_tokens } } }"
)


def mesh_command(addresses: dict[str, str], port: int, workers: int) -> list[str]:
    """The argv that serves Mesh on 127.0.0.1:port; run it in MESH_DIR with mesh_env()."""
    missing = sorted(set(_ADDRESS_VARIABLES) - set(addresses))
    if missing:
        raise ValueError(f"Mesh needs the addresses of {', '.join(missing)}")
    if workers < 1:
        raise ValueError("Mesh needs at least one worker")
    return [
        str(MESH_DIR / "node_modules" / ".bin" / "hive-gateway"),
        "supergraph",
        str(MESH_DIR / "supergraph.graphql"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--fork",
        str(workers),
    ]


def mesh_env(addresses: dict[str, str]) -> dict[str, str]:
    """The process environment with the services' addresses the supergraph interpolates."""
    env = dict(os.environ)
    for name, variable in _ADDRESS_VARIABLES.items():
        env[variable] = addresses[name]
    return env
