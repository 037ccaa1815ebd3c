-- Distinct users per hour (GetActiveUsers): anyone who acted (an event with a user) or
-- viewed a post. uniq states merge across hours; exact up to 65,536 users in a window,
-- within about 1.6% beyond.

CREATE TABLE IF NOT EXISTS {database}.active_users_hourly (
    tenant_id UUID,
    hour DateTime('UTC'),
    users AggregateFunction(uniq, UUID)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, hour)
TTL hour + INTERVAL 31 DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.active_users_of_events
TO {database}.active_users_hourly AS
SELECT tenant_id, toStartOfHour(occurred_at) AS hour, uniqState(user_id) AS users
FROM {database}.events
WHERE user_id != toUUID('00000000-0000-0000-0000-000000000000')
GROUP BY tenant_id, hour;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.active_users_of_impressions
TO {database}.active_users_hourly AS
SELECT tenant_id, toStartOfHour(viewed_at) AS hour, uniqState(user_id) AS users
FROM {database}.impressions
GROUP BY tenant_id, hour;
