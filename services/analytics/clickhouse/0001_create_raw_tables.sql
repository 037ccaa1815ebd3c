-- Raw rows, as the insert batcher writes them: sorted by tenant first, so every read of
-- one tenant touches its own ranges only; kept for a while (TTL), then dropped by merges.
-- non_replicated_deduplication_window: a batch inserted again with the same
-- insert_deduplication_token (the batcher's retry after a crash) is recognised and
-- skipped. Its materialized views' targets keep the same window, so they skip it too.

CREATE TABLE IF NOT EXISTS {database}.events (
    tenant_id UUID,
    event_id UUID,
    event_type LowCardinality(String),
    user_id UUID,
    post_id UUID,
    occurred_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, event_type, occurred_at, event_id)
TTL toDateTime(occurred_at) + INTERVAL 180 DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {database}.impressions (
    tenant_id UUID,
    user_id UUID,
    post_id UUID,
    viewed_at DateTime64(3, 'UTC'),
    dwell_ms UInt32
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(viewed_at)
ORDER BY (tenant_id, post_id, viewed_at)
TTL toDateTime(viewed_at) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 1000;
