-- What consumers keep beside their effects (services/runtime/events/consumer.py).

-- One row per (group, event) whose effect committed, written in the effect's own
-- transaction: a redelivered event finds its row and has no second effect.
CREATE TABLE nova_events.processed_events (
    group_name   text        NOT NULL,
    event_id     uuid        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT processed_events_pkey PRIMARY KEY (group_name, event_id)
);

-- Events whose handler kept failing; the consumer moved on past them. `nova events dlq`
-- lists them and replays them (republishes the envelope, then sets replayed_at).
CREATE TABLE nova_events.dead_letters (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_name  text        NOT NULL,
    event_id    uuid        NOT NULL,
    event_type  text        NOT NULL,
    topic       text        NOT NULL,
    envelope    bytea       NOT NULL,
    error       text        NOT NULL,
    attempts    integer     NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);

-- Listing a group's dead letters (newest first), and every group's or one group's
-- unreplayed ones (what `dlq list` shows by default and `dlq replay --group` replays).
CREATE INDEX dead_letters_group_idx ON nova_events.dead_letters (group_name, id);
CREATE INDEX dead_letters_unreplayed_idx ON nova_events.dead_letters (group_name, id)
    WHERE replayed_at IS NULL;
-- At most one open (unreplayed) dead letter per group and event: a poison event delivered
-- again before it is replayed updates its entry instead of adding a second one.
CREATE UNIQUE INDEX dead_letters_open_event_key
    ON nova_events.dead_letters (group_name, event_id) WHERE replayed_at IS NULL;
