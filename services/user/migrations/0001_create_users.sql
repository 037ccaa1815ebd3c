-- Users, the follow graph and preferences. tenant_id leads every key so that each
-- tenant's rows are contiguous in every index (and row-level security can key on it).
-- Ids are UUIDv7: time-ordered, so ORDER BY id is creation order.

CREATE TABLE user_service.users (
    tenant_id       uuid        NOT NULL,
    id              uuid        NOT NULL,
    handle          text        NOT NULL,
    email           text        NOT NULL,
    password_hash   text        NOT NULL,
    display_name    text        NOT NULL,
    bio             text        NOT NULL DEFAULT '',
    avatar_url      text        NOT NULL DEFAULT '',
    -- Kept in the same transaction as each follow, so profiles never count rows.
    follower_count  bigint      NOT NULL DEFAULT 0 CHECK (follower_count >= 0),
    following_count bigint      NOT NULL DEFAULT 0 CHECK (following_count >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_pkey PRIMARY KEY (tenant_id, id)
);

CREATE UNIQUE INDEX users_handle_key ON user_service.users (tenant_id, lower(handle));
CREATE UNIQUE INDEX users_email_key ON user_service.users (tenant_id, lower(email));

CREATE TABLE user_service.follows (
    tenant_id   uuid        NOT NULL,
    follower_id uuid        NOT NULL,
    followee_id uuid        NOT NULL,
    -- UUIDv7 of the follow itself: orders both follow lists, newest first.
    id          uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT follows_pkey PRIMARY KEY (tenant_id, follower_id, followee_id),
    CONSTRAINT follows_follower_fkey FOREIGN KEY (tenant_id, follower_id)
        REFERENCES user_service.users (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT follows_followee_fkey FOREIGN KEY (tenant_id, followee_id)
        REFERENCES user_service.users (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT follows_not_self CHECK (follower_id <> followee_id)
);

-- "Whom does X follow" (home feed fan-in) and "who follows X" (fan-out), newest first.
CREATE INDEX follows_following_idx ON user_service.follows (tenant_id, follower_id, id DESC);
CREATE INDEX follows_followers_idx ON user_service.follows (tenant_id, followee_id, id DESC);

CREATE TABLE user_service.preferences (
    tenant_id              uuid        NOT NULL,
    user_id                uuid        NOT NULL,
    language               text        NOT NULL,
    time_zone              text        NOT NULL,
    email_notifications    boolean     NOT NULL,
    interests              text[]      NOT NULL,
    show_sensitive_content boolean     NOT NULL,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT preferences_pkey PRIMARY KEY (tenant_id, user_id),
    CONSTRAINT preferences_user_fkey FOREIGN KEY (tenant_id, user_id)
        REFERENCES user_service.users (tenant_id, id) ON DELETE CASCADE
);
