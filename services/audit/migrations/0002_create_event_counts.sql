-- Per-tenant tallies of events by type, kept by the audit consumer in the transaction that
-- records each event (services/audit/consumer.py): activity at a glance, and an effect
-- that is not idempotent by itself (count + 1), so an event applied twice would show.

CREATE TABLE audit_service.event_counts (
    tenant_id  uuid   NOT NULL,
    event_type text   NOT NULL,
    count      bigint NOT NULL CHECK (count >= 0),
    CONSTRAINT event_counts_pkey PRIMARY KEY (tenant_id, event_type)
);
