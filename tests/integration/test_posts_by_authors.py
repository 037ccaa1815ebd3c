"""ListPostsByAuthors bounds its work: up to 1,000 authors and pages of up to 100, for
anonymous callers too, and its SQL reads one index entry per author plus at most
(page + 1)(page + 2)/2 posts, never each author's whole page."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc import aio

from nova.common.v1 import page_pb2
from nova.content.v1 import content_pb2, content_pb2_grpc
from services.content.repository import LIST_POSTS_BY_AUTHORS_SQL, ContentRepository
from services.content.servicer import MAX_LIST_POSTS_BY_AUTHORS, MAX_POSTS_BY_AUTHORS_PAGE
from services.runtime.pagination import NEWEST_CURSOR
from services.runtime.spec import Dependencies
from tests.conftest import SignedIn, SignUp, status_of

if TYPE_CHECKING:
    from nova.content.v1.content_pb2_grpc import ContentServiceAsyncStub

BUSY = 101
"""Authors with BUSY posts each, interleaved: enough for the worst case of a full page."""
QUIET = MAX_LIST_POSTS_BY_AUTHORS - BUSY
"""Authors with one old post each: they make every lookup of the 1,000 find something."""


@pytest.fixture(scope="module")
def content(channels: dict[str, aio.Channel]) -> ContentServiceAsyncStub:
    return content_pb2_grpc.ContentServiceStub(channels["content"])


def _post_id(n: int) -> uuid.UUID:
    """A UUIDv7-shaped id one millisecond after post n - 1's: ids sort as n does."""
    return uuid.UUID(f"{1_700_000_000_000 + n:012x}70008{n:015x}")


class Feed:
    """A tenant of its own: QUIET authors posted once, long ago; then BUSY authors took
    turns, BUSY posts each, so the newest page is spread over as many authors as it can."""

    def __init__(self) -> None:
        self.tenant = uuid.uuid4()
        self.quiet = [uuid.uuid4() for _ in range(QUIET)]
        self.busy = [uuid.uuid4() for _ in range(BUSY)]
        self.authors = self.busy + self.quiet
        self.posts: list[tuple[uuid.UUID, uuid.UUID]] = [
            (_post_id(n), author) for n, author in enumerate(self.quiet)
        ]
        self.posts += [
            (_post_id(QUIET + turn * BUSY + i), author)
            for turn in range(BUSY)
            for i, author in enumerate(self.busy)
        ]

    def expected(self, authors: set[uuid.UUID], after: uuid.UUID, limit: int) -> list[uuid.UUID]:
        """The page worked out the slow way: every post of the authors, sorted."""
        ids = sorted((p for p, a in self.posts if a in authors and p < after), reverse=True)
        return ids[:limit]


@pytest.fixture(scope="module")
async def feed(deps: Dependencies) -> Feed:
    built = Feed()
    async with deps.db.connection() as conn:
        await conn.copy_records_to_table(
            "posts",
            schema_name="content_service",
            columns=["tenant_id", "id", "author_id", "text"],
            records=[(built.tenant, p, a, "post") for p, a in built.posts],
        )
        await conn.execute("ANALYZE content_service.posts")
    return built


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
@pytest.mark.parametrize("page_size", [20, MAX_POSTS_BY_AUTHORS_PAGE])
async def test_a_page_reads_one_entry_per_author_and_a_bounded_number_of_posts(
    deps: Dependencies, feed: Feed, page_size: int, plan_cache_mode: str
) -> None:
    limit = page_size + 1  # the servicer asks for one more row, to know a next page exists
    authors = "'{" + ",".join(map(str, feed.authors)) + "}'::uuid[]"
    execute = f"EXECUTE posts_by_authors('{feed.tenant}', {authors}, '{NEWEST_CURSOR}', {limit})"
    async with deps.db.connection() as conn:
        await conn.execute(f"PREPARE posts_by_authors AS {LIST_POSTS_BY_AUTHORS_SQL}")
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL plan_cache_mode = {plan_cache_mode}")
                plan_json = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {execute}")
        finally:
            await conn.execute("DEALLOCATE posts_by_authors")
    (root,) = json.loads(plan_json)
    scans = [node for node in _nodes(root["Plan"]) if node.get("Relation Name") == "posts"]
    assert {node["Index Name"] for node in scans} == {"posts_author_idx"}, scans
    read = sum(node["Actual Rows"] * node["Actual Loops"] for node in scans)

    # This data is the worst case: every leader has a post for each place it may take.
    # Reading each author's page first read 1,000 x 21 or 101 x 101 + 899 rows here.
    assert read == MAX_LIST_POSTS_BY_AUTHORS + limit * (limit + 1) // 2
    assert root["Plan"]["Actual Rows"] == limit


@pytest.mark.parametrize("limit", [1, 2, 21, 101])
async def test_the_bounded_merge_gives_the_same_pages_as_sorting_every_post(
    deps: Dependencies, feed: Feed, limit: int
) -> None:
    repository = ContentRepository(deps.db)
    samples = [
        (feed.authors, NEWEST_CURSOR),
        (feed.authors, _post_id(QUIET + BUSY * BUSY // 2)),
        (feed.busy[::7] + feed.quiet[::50], _post_id(QUIET + 3 * BUSY)),
        (feed.quiet, NEWEST_CURSOR),
        ([feed.busy[0]], NEWEST_CURSOR),
    ]
    for authors, after in samples:
        rows = await repository.list_posts_by_authors(
            tenant_id=feed.tenant, author_ids=authors, after=after, limit=limit
        )
        assert [row.id for row in rows] == feed.expected(set(authors), after, limit)


async def fails(call: Any, fragment: str) -> None:
    with pytest.raises(aio.AioRpcError) as error:
        await call
    code, details = status_of(error)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert fragment in details, details


async def test_an_anonymous_caller_may_send_1000_authors_and_ask_for_100_posts_but_no_more(
    content: ContentServiceAsyncStub,
) -> None:
    thousand = [str(uuid.uuid4()) for _ in range(MAX_LIST_POSTS_BY_AUTHORS)]
    largest = page_pb2.PageRequest(page_size=MAX_POSTS_BY_AUTHORS_PAGE)
    response = await content.ListPostsByAuthors(
        content_pb2.ListPostsByAuthorsRequest(author_ids=thousand, page=largest)
    )
    assert list(response.posts) == []
    assert response.page.next_page_token == ""

    too_many = content_pb2.ListPostsByAuthorsRequest(
        author_ids=[*thousand, str(uuid.uuid4())], page=largest
    )
    await fails(
        content.ListPostsByAuthors(too_many), "author_ids has 1001 ids; at most 1000 are allowed"
    )
    too_large = content_pb2.ListPostsByAuthorsRequest(
        author_ids=thousand, page=page_pb2.PageRequest(page_size=MAX_POSTS_BY_AUTHORS_PAGE + 1)
    )
    await fails(
        content.ListPostsByAuthors(too_large), "page.page_size is 101; at most 100 is allowed"
    )


async def test_a_burst_by_one_author_fills_pages_before_older_posts_by_others(
    content: ContentServiceAsyncStub, sign_up: SignUp
) -> None:
    # Each author may give at most as many posts as its newest post's rank leaves room
    # for; a's burst, ranked behind b's newest, must still fill the pages in order.
    a, b, c = [await sign_up("burst") for _ in range(3)]
    written: list[tuple[SignedIn, str]] = [(b, "b1"), (c, "c1")]
    written += [(a, f"a{i}") for i in range(6)] + [(b, "b2")]
    for author, text in written:
        await content.CreatePost(content_pb2.CreatePostRequest(text=text), metadata=author.metadata)
    pages: list[list[str]] = []
    token = ""
    while True:
        response = await content.ListPostsByAuthors(
            content_pb2.ListPostsByAuthorsRequest(
                author_ids=[a.user.id, b.user.id, c.user.id],
                page=page_pb2.PageRequest(page_size=3, page_token=token),
            )
        )
        pages.append([post.text for post in response.posts])
        token = response.page.next_page_token
        if not token:
            break

    assert pages == [["b2", "a5", "a4"], ["a3", "a2", "a1"], ["a0", "c1", "b1"]]
