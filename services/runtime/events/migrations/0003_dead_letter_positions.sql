-- Where each dead letter was in the log, and whether it was an event at all: a record
-- that is not an envelope (a Kafka tombstone, another producer's message, corrupt bytes)
-- is dead-lettered with its raw bytes in `envelope` and, in `undecodable`, why it could
-- not be decoded; it has no event id of its own (event_id is derived from its position)
-- and cannot be replayed. Rows written before this migration have no position.
ALTER TABLE nova_events.dead_letters
    ADD COLUMN partition   integer,
    ADD COLUMN position    bigint,
    ADD COLUMN undecodable text;
