-- The insert batcher's journal: rows accepted for ClickHouse (impressions of a
-- RecordImpressions call, a consumed event) wait here, durable, until a batch of them is
-- written. A flusher claims a batch (batch_id, committed before it inserts), inserts it
-- with the batch id as ClickHouse's deduplication token, then deletes it: a flusher that
-- dies between the two leaves a claimed batch, which the next flusher inserts again and
-- ClickHouse recognises.
CREATE TABLE analytics_service.pending_rows (
    id bigserial PRIMARY KEY,
    target text NOT NULL,
    row_count integer NOT NULL CHECK (row_count > 0),
    byte_count integer NOT NULL,
    payload bytea NOT NULL,
    staged_at timestamptz NOT NULL DEFAULT now(),
    batch_id bigint,
    claimed_at timestamptz
);

-- What is waiting, per target, read by index only (the flusher's "is a batch due?").
CREATE INDEX pending_rows_waiting_idx ON analytics_service.pending_rows (target, id)
    INCLUDE (row_count, byte_count, staged_at) WHERE batch_id IS NULL;
CREATE INDEX pending_rows_batch_idx ON analytics_service.pending_rows (batch_id)
    WHERE batch_id IS NOT NULL;

CREATE SEQUENCE analytics_service.batch_ids;

-- Part of every deduplication token: a journal made afresh (a new database) beside a
-- ClickHouse that remembers another journal's batch ids must not have its batches taken
-- for those.
CREATE TABLE analytics_service.journal (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    only_one boolean NOT NULL DEFAULT true UNIQUE CHECK (only_one)
);
INSERT INTO analytics_service.journal DEFAULT VALUES;
