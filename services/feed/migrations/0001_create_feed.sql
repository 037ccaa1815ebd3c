-- The feed's own view of the follow graph and of posts, kept by its consumer group from
-- the user and content services' events (services/feed/fanout.py): what fan-out, the
-- read-time merge of big authors and timeline rebuilds read, without calling or
-- reaching into another service. Tenant first in every key, as everywhere.

-- Who follows whom.
CREATE TABLE feed_service.follows (
    tenant_id   uuid        NOT NULL,
    follower_id uuid        NOT NULL,
    followee_id uuid        NOT NULL,
    followed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT follows_pkey PRIMARY KEY (tenant_id, follower_id, followee_id)
);
-- The pull path and rebuilds: a user's most recent follows (at most PULL_AUTHORS).
CREATE INDEX follows_recent_idx ON feed_service.follows (tenant_id, follower_id, followed_at DESC);
-- Fan-out: an author's followers.
CREATE INDEX follows_followee_idx ON feed_service.follows (tenant_id, followee_id, follower_id);

-- Every user the feed has heard of: followers counted, whether they are a big author
-- (not fanned out: merged at read time; set above NOVA_FEED_BIG_AUTHOR_FOLLOWERS and
-- cleared below 90% of it, so a follow and unfollow at the line do not flip it each time)
-- and when they last read their feed (fan-out skips the inactive).
CREATE TABLE feed_service.members (
    tenant_id      uuid        NOT NULL,
    user_id        uuid        NOT NULL,
    followers      integer     NOT NULL DEFAULT 0 CHECK (followers >= 0),
    big            boolean     NOT NULL DEFAULT false,
    last_active_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT members_pkey PRIMARY KEY (tenant_id, user_id)
);

-- Posts by author, newest first (ids are UUIDv7: time-ordered). A deleted post's row
-- stays, marked, so a late or replayed event cannot bring it back into a timeline.
CREATE TABLE feed_service.posts (
    tenant_id  uuid        NOT NULL,
    post_id    uuid        NOT NULL,
    author_id  uuid        NOT NULL,
    deleted_at timestamptz,
    CONSTRAINT posts_pkey PRIMARY KEY (tenant_id, post_id)
);
CREATE INDEX posts_author_idx ON feed_service.posts (tenant_id, author_id, post_id DESC)
    WHERE deleted_at IS NULL;
