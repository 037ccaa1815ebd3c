-- Per-post totals (BatchGetPostMetrics) and per-minute engagement (GetTrendingPosts),
-- kept up to date by materialized views as rows are inserted: a read sums a few
-- pre-aggregated rows per post instead of scanning raw ones. A like counts +1, an unlike -1.

CREATE TABLE IF NOT EXISTS {database}.post_totals (
    tenant_id UUID,
    post_id UUID,
    views SimpleAggregateFunction(sum, Int64),
    likes SimpleAggregateFunction(sum, Int64),
    comments SimpleAggregateFunction(sum, Int64)
)
ENGINE = AggregatingMergeTree
ORDER BY (tenant_id, post_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.post_totals_of_impressions
TO {database}.post_totals AS
SELECT tenant_id, post_id, toInt64(count()) AS views, toInt64(0) AS likes, toInt64(0) AS comments
FROM {database}.impressions
GROUP BY tenant_id, post_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.post_totals_of_events
TO {database}.post_totals AS
SELECT
    tenant_id,
    post_id,
    toInt64(0) AS views,
    toInt64(countIf(event_type = 'PostLiked') - countIf(event_type = 'PostUnliked')) AS likes,
    toInt64(countIf(event_type = 'CommentCreated')) AS comments
FROM {database}.events
WHERE event_type IN ('PostLiked', 'PostUnliked', 'CommentCreated')
GROUP BY tenant_id, post_id;

CREATE TABLE IF NOT EXISTS {database}.post_minutes (
    tenant_id UUID,
    minute DateTime('UTC'),
    post_id UUID,
    views SimpleAggregateFunction(sum, Int64),
    likes SimpleAggregateFunction(sum, Int64),
    comments SimpleAggregateFunction(sum, Int64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (tenant_id, minute, post_id)
TTL minute + INTERVAL 8 DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.post_minutes_of_impressions
TO {database}.post_minutes AS
SELECT
    tenant_id,
    toStartOfMinute(viewed_at) AS minute,
    post_id,
    toInt64(count()) AS views,
    toInt64(0) AS likes,
    toInt64(0) AS comments
FROM {database}.impressions
GROUP BY tenant_id, minute, post_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.post_minutes_of_events
TO {database}.post_minutes AS
SELECT
    tenant_id,
    toStartOfMinute(occurred_at) AS minute,
    post_id,
    toInt64(0) AS views,
    toInt64(countIf(event_type = 'PostLiked') - countIf(event_type = 'PostUnliked')) AS likes,
    toInt64(countIf(event_type = 'CommentCreated')) AS comments
FROM {database}.events
WHERE event_type IN ('PostLiked', 'PostUnliked', 'CommentCreated')
GROUP BY tenant_id, minute, post_id;
