"""Analytics' settings (NOVA_CLICKHOUSE_*, NOVA_ANALYTICS_*), read with the rest of the
configuration so a bad value stops the start, not the first insert."""

from dataclasses import dataclass, field
from pathlib import Path

from services.runtime.clickhouse import check_url
from services.runtime.env import EnvReader
from services.runtime.rate_limit import Rate


@dataclass(frozen=True)
class AnalyticsSettings:
    clickhouse_url: str | None = None
    """A ClickHouse server (NOVA_CLICKHOUSE_URL); None: the embedded chdb in the data folder."""
    chdb_path: Path | None = None
    """Where chdb keeps its data (NOVA_CHDB_PATH); None: NOVA_DATA_DIR/clickhouse. One
    process opens one path at most (chdb's own rule)."""
    database: str = "nova"
    flush_rows: int = 100_000
    """A batch is written once this many rows wait (ClickHouse: ≥ 1,000 rows an insert)."""
    flush_bytes: int = 16 * 1024 * 1024
    flush_interval_seconds: float = 1.0
    """…or once the oldest has waited this long (ClickHouse: about one insert a second)."""
    max_backlog_rows: int = 1_000_000
    """Rows that may wait to be written before RecordImpressions refuses more."""
    impression_calls: Rate = field(default_factory=lambda: Rate(per_minute=60, burst=10))
    """RecordImpressions calls one user may make (of up to 1,000 each): no one caller fills
    the backlog every caller shares. A client batches what it saw every few seconds."""
    stale_after_seconds: float = 30.0
    """A claimed batch this old is taken to be a dead flusher's and inserted again."""
    merge_window_seconds: float = 0.002
    """How long a BatchGetPostMetrics call waits for others to share its query; 0: off."""
    max_merged_ids: int = 1000
    """Post ids one merged query asks for at most."""


def analytics_settings(read: EnvReader) -> AnalyticsSettings:
    url = read.optional("NOVA_CLICKHOUSE_URL")
    return AnalyticsSettings(
        clickhouse_url=check_url(url) if url is not None else None,
        chdb_path=Path(chdb).absolute() if (chdb := read.optional("NOVA_CHDB_PATH")) else None,
        database=read.text("NOVA_CLICKHOUSE_DATABASE", "nova"),
        flush_rows=read.number("NOVA_ANALYTICS_FLUSH_ROWS", 100_000, 1, 10_000_000),
        flush_bytes=read.number("NOVA_ANALYTICS_FLUSH_BYTES", 16 << 20, 1024, 1 << 30),
        flush_interval_seconds=read.seconds_from_ms(
            "NOVA_ANALYTICS_FLUSH_INTERVAL_MS", 1000, 10, 60_000
        ),
        impression_calls=Rate(
            per_minute=read.number(
                "NOVA_ANALYTICS_IMPRESSION_CALLS_PER_MINUTE", 60, 1, 100_000_000
            ),
            burst=read.number("NOVA_ANALYTICS_IMPRESSION_CALLS_BURST", 10, 1, 100_000_000),
        ),
        max_backlog_rows=read.number(
            "NOVA_ANALYTICS_MAX_BACKLOG_ROWS", 1_000_000, 1000, 1_000_000_000
        ),
        stale_after_seconds=read.seconds_from_ms(
            "NOVA_ANALYTICS_STALE_AFTER_MS", 30_000, 100, 3_600_000
        ),
        merge_window_seconds=read.number("NOVA_ANALYTICS_MERGE_WINDOW_US", 2000, 0, 1_000_000)
        / 1_000_000,
        max_merged_ids=read.number("NOVA_ANALYTICS_MAX_MERGED_IDS", 1000, 100, 10_000),
    )
