-- The per-tenant audit log: every domain event, as the audit consumer group received it
-- (services/audit/consumer.py), the plan's "complete transaction history".
-- tenant_id leads every key so each tenant's history is contiguous in every index.

CREATE TABLE audit_service.audit_log (
    tenant_id      uuid        NOT NULL,
    event_id       uuid        NOT NULL,
    event_type     text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    -- The event's payload as JSON (protobuf's JSON mapping, proto field names).
    summary        jsonb       NOT NULL,
    CONSTRAINT audit_log_pkey PRIMARY KEY (tenant_id, event_id)
);

-- A tenant's history newest first; (occurred_at, event_id) is the keyset cursor.
CREATE INDEX audit_log_tenant_time_idx
    ON audit_service.audit_log (tenant_id, occurred_at DESC, event_id DESC);
-- One aggregate's history (a post's, a user's), newest first, same cursor.
CREATE INDEX audit_log_aggregate_idx
    ON audit_service.audit_log (tenant_id, aggregate_id, occurred_at DESC, event_id DESC);
