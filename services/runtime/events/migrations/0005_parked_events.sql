-- Order after a dead letter (services/runtime/events/parking.py). Once an event of an
-- aggregate is dead-lettered for a group, the group parks that aggregate's later events
-- here, in delivery order, instead of applying them out of order; they are applied once
-- the dead letter is replayed (by the group's own consumer) or discarded.
ALTER TABLE nova_events.dead_letters
    -- The aggregate the letter holds back (NULL for undecodable records and old rows).
    ADD COLUMN aggregate_id        text,
    -- `nova events dlq replay` asks the group's consumer to apply the letter again.
    ADD COLUMN replay_requested_at timestamptz,
    -- `nova events dlq discard`: given up on; the aggregate's parked events flow on.
    ADD COLUMN discarded_at        timestamptz;

-- A letter is open while neither replayed nor discarded.
DROP INDEX nova_events.dead_letters_unreplayed_idx;
DROP INDEX nova_events.dead_letters_open_event_key;
CREATE INDEX dead_letters_open_idx ON nova_events.dead_letters (group_name, id)
    WHERE replayed_at IS NULL AND discarded_at IS NULL;
CREATE UNIQUE INDEX dead_letters_open_event_key
    ON nova_events.dead_letters (group_name, event_id)
    WHERE replayed_at IS NULL AND discarded_at IS NULL;
-- What the consumer looks up per batch: the aggregates its open letters hold back.
CREATE INDEX dead_letters_holding_idx
    ON nova_events.dead_letters (group_name, topic, aggregate_id)
    WHERE replayed_at IS NULL AND discarded_at IS NULL AND aggregate_id IS NOT NULL;

CREATE TABLE nova_events.parked (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_name   text        NOT NULL,
    topic        text        NOT NULL,
    aggregate_id text        NOT NULL,
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    partition    integer     NOT NULL,
    position     bigint      NOT NULL,
    envelope     bytea       NOT NULL,
    parked_at    timestamptz NOT NULL DEFAULT now(),
    -- A redelivered event (a crash before the offset commit) is parked once.
    CONSTRAINT parked_event_key UNIQUE (group_name, event_id)
);
-- Releasing an aggregate: its parked events in the order they arrived.
CREATE INDEX parked_aggregate_idx ON nova_events.parked (group_name, topic, aggregate_id, id);
