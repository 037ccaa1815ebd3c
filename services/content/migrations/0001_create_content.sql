-- Posts, comments and likes. tenant_id leads every key so that each tenant's rows are
-- contiguous in every index (and row-level security can key on it).
-- Ids are UUIDv7: time-ordered, so ORDER BY id DESC is newest first and keyset cursors
-- come straight from the id. Authors are user ids owned by the user service, so there
-- is no foreign key across the two schemas.

CREATE TABLE content_service.posts (
    tenant_id     uuid        NOT NULL,
    id            uuid        NOT NULL,
    author_id     uuid        NOT NULL,
    text          text        NOT NULL,
    -- Kept in the same transaction as each like, unlike and comment, so stats never
    -- count rows.
    like_count    bigint      NOT NULL DEFAULT 0,
    comment_count bigint      NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT posts_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT posts_like_count_check CHECK (like_count >= 0),
    CONSTRAINT posts_comment_count_check CHECK (comment_count >= 0)
);

-- A user's posts, and the per-author range scans of the merged "posts by authors" feed,
-- newest first.
CREATE INDEX posts_author_idx ON content_service.posts (tenant_id, author_id, id DESC);

CREATE TABLE content_service.comments (
    tenant_id  uuid        NOT NULL,
    id         uuid        NOT NULL,
    post_id    uuid        NOT NULL,
    author_id  uuid        NOT NULL,
    text       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT comments_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT comments_post_fkey FOREIGN KEY (tenant_id, post_id)
        REFERENCES content_service.posts (tenant_id, id) ON DELETE CASCADE
);

-- The latest comments of each post (and the cascade when a post is deleted).
CREATE INDEX comments_post_idx ON content_service.comments (tenant_id, post_id, id DESC);

CREATE TABLE content_service.likes (
    tenant_id  uuid        NOT NULL,
    post_id    uuid        NOT NULL,
    user_id    uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- One like per user and post; also answers "did this viewer like it" and the cascade.
    CONSTRAINT likes_pkey PRIMARY KEY (tenant_id, post_id, user_id),
    CONSTRAINT likes_post_fkey FOREIGN KEY (tenant_id, post_id)
        REFERENCES content_service.posts (tenant_id, id) ON DELETE CASCADE
);
