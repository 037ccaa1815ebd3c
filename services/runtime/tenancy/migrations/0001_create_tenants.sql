-- The tenant registry. A tenant's id is the tenant_id of every row it owns; its slug is
-- what callers name it by (x-nova-tenant). A deleted tenant keeps its row (deleted_at):
-- its id is never handed out again, while its slug may be.
CREATE TABLE nova_tenants.tenants (
    id                  uuid        PRIMARY KEY,
    slug                text        NOT NULL,
    name                text        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    -- Quotas; NULL is no limit of the tenant's own (the server's limits still apply).
    requests_per_second double precision CHECK (requests_per_second > 0),
    burst               integer     CHECK (burst >= 1),
    max_in_flight       integer     CHECK (max_in_flight >= 1),
    max_users           bigint      CHECK (max_users >= 0),
    max_posts           bigint      CHECK (max_posts >= 0),
    max_comments        bigint      CHECK (max_comments >= 0)
);

CREATE UNIQUE INDEX tenants_slug_key ON nova_tenants.tenants (slug) WHERE deleted_at IS NULL;

-- The tenant of callers who name none, and of every row written before tenants existed.
INSERT INTO nova_tenants.tenants (id, slug, name)
VALUES ('00000000-0000-0000-0000-000000000000', 'default', 'Default');
