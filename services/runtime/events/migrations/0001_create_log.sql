-- The embedded event log (services/runtime/events/pglog.py): the default transport when
-- no Kafka is configured. One ordered sequence for every topic: publishers take a
-- transaction-level advisory lock before inserting, so seq order is commit order and a
-- reader that has seen seq N has seen every row below it.
CREATE TABLE nova_events.log (
    seq          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic        text        NOT NULL,
    -- The aggregate id: what Kafka would partition by; kept for inspection and pruning.
    key          text        NOT NULL,
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    -- The serialized nova.events.v1.EventEnvelope, exactly as published.
    envelope     bytea       NOT NULL,
    -- clock_timestamp(), not now(): the moment of the insert, which under the publish lock
    -- follows seq order, so rewinding to a time finds one seq boundary.
    published_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- What a subscription reads: the rows of its topics after its position.
CREATE INDEX log_topic_seq_idx ON nova_events.log (topic, seq);
-- What rewind (and retention) looks up.
CREATE INDEX log_published_at_idx ON nova_events.log (published_at);

-- Each consumer group's committed position per topic: the last seq it has processed.
CREATE TABLE nova_events.offsets (
    group_name text        NOT NULL,
    topic      text        NOT NULL,
    seq        bigint      NOT NULL CHECK (seq >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT offsets_pkey PRIMARY KEY (group_name, topic)
);
