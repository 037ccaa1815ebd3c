"""Feed-path queries stay on their indexes as the data grows.

A tenant of its own gets a realistic volume of users, follows, posts, likes and comments;
then each SQL constant the services run on the feed path is EXPLAINed with realistic
parameters, both as a custom plan (the first executions of a prepared statement) and as a
generic plan (what asyncpg's cached statements settle on), and any sequential scan of a
populated table fails the test. Run with `pytest -s` to see the plans.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from services.content import repository as content_sql
from services.runtime.pagination import NEWEST_CURSOR
from services.runtime.spec import Dependencies
from services.user import repository as user_sql

USERS = 50_000
FOLLOWERS = 2_000
"""The users who follow anyone; each follows FOLLOWS_EACH others."""
FOLLOWS_EACH = 10
AUTHORS = 1_000
"""The users who post; POSTS go round them."""
POSTS = 50_000
LIKES_EACH = 2
COMMENTED_POSTS = 5_000
"""The oldest posts, which have COMMENTS_EACH comments each."""
COMMENTS_EACH = 10
POPULATED = {"users", "follows", "posts", "likes", "comments"}

Param = uuid.UUID | list[uuid.UUID] | int | None


def _v7_sql(ms: str, n: str) -> str:
    """SQL for a UUIDv7-shaped id with timestamp `ms` and serial `n`; mirrors `_v7`."""
    return f"(lpad(to_hex({ms}), 12, '0') || '70008' || lpad(to_hex({n}), 15, '0'))::uuid"


def _v7(ms: int, n: int) -> uuid.UUID:
    return uuid.UUID(f"{ms:012x}70008{n:015x}")


def user_id(n: int) -> uuid.UUID:
    return _v7(1_690_000_000_000 + n, n)


def post_id(n: int) -> uuid.UUID:
    return _v7(1_700_000_000_000 + n * 60_000, n)


def followees(n: int) -> list[int]:
    """User n follows the users 1, 8, 15, ... places after them."""
    return [(n + 7 * j) % USERS + 1 for j in range(FOLLOWS_EACH)]


_USER_SQL = _v7_sql("1690000000000 + {n}", "{n}")
_POST_SQL = _v7_sql("1700000000000 + {n}::bigint * 60000", "{n}")
_FOLLOWEE_SQL = _USER_SQL.format(n=f"((f + 7 * j) % {USERS} + 1)")

_POPULATE = [
    f"""INSERT INTO user_service.users (tenant_id, id, handle, email, password_hash,
            display_name, following_count, follower_count)
        SELECT $1, {_USER_SQL.format(n="g")}, 'plan_' || g, 'plan_' || g || '@example.com',
               repeat('h', 97), 'Plan user ' || g,
               CASE WHEN g <= {FOLLOWERS} THEN {FOLLOWS_EACH} ELSE 0 END,
               (SELECT count(*) FROM generate_series(0, {FOLLOWS_EACH - 1}) j
                WHERE g - 1 - 7 * j BETWEEN 1 AND {FOLLOWERS})
        FROM generate_series(1, {USERS}) g""",
    f"""INSERT INTO user_service.follows (tenant_id, follower_id, followee_id, id)
        SELECT $1, {_USER_SQL.format(n="f")}, {_FOLLOWEE_SQL},
               {_v7_sql("1695000000000 + f * 10 + j", "f * 10 + j")}
        FROM generate_series(1, {FOLLOWERS}) f, generate_series(0, {FOLLOWS_EACH - 1}) j""",
    f"""INSERT INTO content_service.posts (tenant_id, id, author_id, text, like_count,
            comment_count)
        SELECT $1, {_POST_SQL.format(n="g")}, {_USER_SQL.format(n=f"(g % {AUTHORS} + 1)")},
               'post ' || g, {LIKES_EACH},
               CASE WHEN g <= {COMMENTED_POSTS} THEN {COMMENTS_EACH} ELSE 0 END
        FROM generate_series(1, {POSTS}) g""",
    f"""INSERT INTO content_service.likes (tenant_id, post_id, user_id)
        SELECT $1, {_POST_SQL.format(n="p")},
               {_USER_SQL.format(n=f"((p * 7 + r * {USERS // LIKES_EACH}) % {USERS} + 1)")}
        FROM generate_series(1, {POSTS}) p, generate_series(0, {LIKES_EACH - 1}) r""",
    f"""INSERT INTO content_service.comments (tenant_id, id, post_id, author_id, text)
        SELECT $1, {_v7_sql("1700000000000 + p * 60000 + k * 1000", "p * 100 + k")},
               {_POST_SQL.format(n="p")}, {_USER_SQL.format(n=f"((p + k) % {USERS} + 1)")},
               'comment ' || k
        FROM generate_series(1, {COMMENTED_POSTS}) p, generate_series(1, {COMMENTS_EACH}) k""",
]


@dataclass(frozen=True)
class Case:
    sql: str
    params: tuple[Param, ...]
    indexes: frozenset[str]
    """Indexes the plan must read: another index would mean scanning more than asked for."""


def _cases(tenant: uuid.UUID) -> dict[str, Case]:
    """Each feed-path constant with the parameters a busy page would send."""
    reader = 1
    star = followees(reader)[-1]
    newest = NEWEST_CURSOR
    some_users = [user_id(n) for n in range(1, 101)]
    old_posts = [post_id(n) for n in range(1, 101)]
    return {
        "user.BATCH_GET_USERS_SQL": Case(
            user_sql.BATCH_GET_USERS_SQL,
            (tenant, user_id(reader), some_users),
            frozenset({"users_pkey"}),
        ),
        "user.LIST_FOLLOWING_SQL": Case(
            user_sql.LIST_FOLLOWING_SQL,
            (tenant, user_id(star), user_id(reader), newest, 21),
            frozenset({"follows_following_idx", "users_pkey"}),
        ),
        "user.LIST_FOLLOWERS_SQL": Case(
            user_sql.LIST_FOLLOWERS_SQL,
            (tenant, user_id(reader), user_id(star), newest, 21),
            frozenset({"follows_followers_idx", "users_pkey"}),
        ),
        "content.LIST_USER_POSTS_SQL": Case(
            content_sql.LIST_USER_POSTS_SQL,
            (tenant, user_id(star), newest, 21),
            frozenset({"posts_author_idx"}),
        ),
        "content.LIST_POSTS_BY_AUTHORS_SQL (a reader's 10 followees)": Case(
            content_sql.LIST_POSTS_BY_AUTHORS_SQL,
            (tenant, [user_id(n) for n in followees(reader)], newest, 21),
            frozenset({"posts_author_idx"}),
        ),
        "content.LIST_POSTS_BY_AUTHORS_SQL (1000 authors, page 2)": Case(
            content_sql.LIST_POSTS_BY_AUTHORS_SQL,
            (tenant, [user_id(n) for n in range(1, 1001)], post_id(POSTS - 20), 21),
            frozenset({"posts_author_idx"}),
        ),
        "content.BATCH_GET_POSTS_SQL": Case(
            content_sql.BATCH_GET_POSTS_SQL,
            (tenant, [post_id(POSTS - n) for n in range(100)]),
            frozenset({"posts_pkey"}),
        ),
        "content.BATCH_GET_POST_STATS_SQL": Case(
            content_sql.BATCH_GET_POST_STATS_SQL,
            (tenant, old_posts, user_id(reader)),
            frozenset({"posts_pkey", "likes_pkey"}),
        ),
        "content.BATCH_LIST_COMMENTS_SQL": Case(
            content_sql.BATCH_LIST_COMMENTS_SQL,
            (tenant, old_posts, 3),
            frozenset({"posts_pkey", "comments_post_idx"}),
        ),
        "content.BATCH_STATS_AND_COMMENTS_SQL": Case(
            content_sql.BATCH_STATS_AND_COMMENTS_SQL,
            (tenant, old_posts, user_id(reader), 3),
            frozenset({"posts_pkey", "likes_pkey", "comments_post_idx"}),
        ),
    }


CASE_NAMES = list(_cases(uuid.UUID(int=0)))


@pytest.fixture(scope="module")
async def tenant(deps: Dependencies) -> uuid.UUID:
    """A tenant of its own, populated, so no other test sees (or skews) these rows."""
    tenant_id = uuid.uuid4()
    # A new session: a pooled one may hold foreign-key check plans cached while the tables
    # were nearly empty, which made the bulk insert take minutes instead of a second.
    assert deps.config.database_url is not None
    conn = await asyncpg.connect(deps.config.database_url)
    try:
        async with conn.transaction():
            for statement in _POPULATE:
                await conn.execute(statement, tenant_id)
    finally:
        await conn.close()
    async with deps.db.connection() as conn:
        await conn.execute(
            "ANALYZE user_service.users, user_service.follows, content_service.posts, "
            "content_service.likes, content_service.comments"
        )
    return tenant_id


def _literal(value: Param) -> str:
    """EXECUTE takes its arguments as SQL text, not as bound parameters."""
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, uuid.UUID):
        return f"'{value}'::uuid"
    return "'{" + ",".join(str(item) for item in value) + "}'::uuid[]"


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
@pytest.mark.parametrize("name", CASE_NAMES)
async def test_feed_path_query_reads_its_indexes_and_never_scans_a_table_sequentially(
    deps: Dependencies, tenant: uuid.UUID, name: str, plan_cache_mode: str
) -> None:
    case = _cases(tenant)[name]
    execute = f"EXECUTE feed_path_query({', '.join(map(_literal, case.params))})"
    async with deps.db.connection() as conn:
        await conn.execute(f"PREPARE feed_path_query AS {case.sql}")
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL plan_cache_mode = {plan_cache_mode}")
                plan_json = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {execute}")
                text = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {execute}"))
        finally:
            await conn.execute("DEALLOCATE feed_path_query")
    # Long id arrays are elided: the plan's shape is what a reader wants to see.
    print(f"\n--- {name} [{plan_cache_mode}]\n" + re.sub(r"'\{[^}]{80,}\}'", "'{...}'", text))
    (root,) = json.loads(plan_json)
    nodes = list(_nodes(root["Plan"]))
    seq_scans = [
        node["Relation Name"]
        for node in nodes
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in POPULATED
    ]
    assert not seq_scans, f"{name} scans {seq_scans} sequentially:\n{text}"
    unused = case.indexes - {node.get("Index Name") for node in nodes}
    assert not unused, f"{name} does not read {sorted(unused)}:\n{text}"
