-- The transactional outbox (services/runtime/events/outbox.py): written in the
-- transaction of each change, published and marked by the relay, pruned after retention.
-- Applied to the schema of every service that declares aggregate types. IF NOT EXISTS:
-- databases made before this file existed have the table from the service's own 0002.
CREATE TABLE IF NOT EXISTS {schema}.outbox (
    -- Assigned at insert: the relay publishes in this order, which for one aggregate is
    -- the order its changes committed (they lock the aggregate's row).
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    tenant_id      uuid        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    event_type     text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    envelope       bytea       NOT NULL,
    sent_at        timestamptz
);
-- What the relay claims: small, since sent rows leave it.
CREATE INDEX IF NOT EXISTS outbox_unsent_idx ON {schema}.outbox (id) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_unsent_aggregate_idx ON {schema}.outbox (aggregate_id, id)
    WHERE sent_at IS NULL;
-- What pruning deletes.
CREATE INDEX IF NOT EXISTS outbox_sent_idx ON {schema}.outbox (sent_at) WHERE sent_at IS NOT NULL;
