"""How far back a consumer group can be replayed without applying an effect twice.

A group knows the events it processed by their processed-event records, and those are
pruned after NOVA_EVENT_RETENTION_HOURS (retention.py); a Redis effect's marker expires
after ConsumerSettings.redis_marker_ttl_seconds, the same seven days by default. An event
processed at P is recognised until P + retention, and it was processed after it was
published, so re-reading from T repeats nothing as long as T is within the retention of
now: that is the group's dedup horizon. A rewind to before it is refused here (the
operator may still ask for it, knowing effects may repeat).

Dead-letter replays are not bound by it: the failed group never recorded the event as
processed, and the letter is marked replayed in the transaction of the effect, so a
letter is applied once however old it is (dead_letters.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.runtime.errors import InvalidArgument


class BeyondDedupHorizonError(InvalidArgument):
    """A rewind would re-deliver events whose processed records may be gone."""


def dedup_horizon(retention_seconds: float, now: datetime | None = None) -> datetime:
    """The earliest time a group can be re-read from without repeating effects."""
    return (now or datetime.now(UTC)) - timedelta(seconds=retention_seconds)


def check_rewind(
    group: str, since: datetime | None, retention_seconds: float, now: datetime | None = None
) -> None:
    """Raises BeyondDedupHorizonError when re-reading `group` from `since` (None: the
    beginning of the log) could apply an event's effect a second time."""
    horizon = dedup_horizon(retention_seconds, now)
    if since is not None and since >= horizon:
        return
    where = "the beginning of the log" if since is None else since.isoformat(timespec="seconds")
    raise BeyondDedupHorizonError(
        f"group {group!r} remembers the events it processed for "
        f"{retention_seconds / 3600:g} h (NOVA_EVENT_RETENTION_HOURS), since "
        f"{horizon.isoformat(timespec='seconds')}; re-reading from {where} could apply "
        "older events a second time. Choose --from after that, or pass --allow-repeats "
        "if the group's effects were wiped or are idempotent"
    )
