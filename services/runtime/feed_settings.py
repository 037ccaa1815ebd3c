"""The home feed's settings (NOVA_FEED_*), read with the rest of the configuration so a
bad value stops the start, not the first read."""

from dataclasses import dataclass

from services.runtime.env import EnvReader


@dataclass(frozen=True)
class FeedSettings:
    max_items: int = 800
    """Posts a stored timeline keeps (newest first); pages past them come from PostgreSQL."""
    active_days: int = 7
    """Fan-out writes only to timelines of users who read their feed this recently; a
    timeline unread this long expires and is rebuilt on the next read."""
    big_author_followers: int = 10_000
    """Authors with more followers are not fanned out: their posts are merged in when a
    follower reads."""


def feed_settings(read: EnvReader) -> FeedSettings:
    return FeedSettings(
        max_items=read.number("NOVA_FEED_MAX_ITEMS", 800, 100, 100_000),
        active_days=read.number("NOVA_FEED_ACTIVE_DAYS", 7, 1, 365),
        big_author_followers=read.number("NOVA_FEED_BIG_AUTHOR_FOLLOWERS", 10_000, 1, 100_000_000),
    )
