-- When each consumer group was last seen running: its member refreshes `seen_at` while it is
-- subscribed (services/runtime/events/pglog.py, at most every 20 s and on each commit), and
-- the log's retention keeps what a group seen within NOVA_EVENT_ABANDON_HOURS has not yet
-- committed (services/runtime/events/retention.py). A group's rows are written when it
-- subscribes, so every group that ever ran is registered here. Rows from before this
-- migration count as seen when they were last committed.
ALTER TABLE nova_events.offsets ADD COLUMN seen_at timestamptz NOT NULL DEFAULT now();
UPDATE nova_events.offsets SET seen_at = updated_at;
