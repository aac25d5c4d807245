-- Users refused by the hub (moderation). The same SQL runs on SQLite and PostgreSQL.
CREATE TABLE bans (
    user_id    TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- seconds since the epoch when the ban ends; NULL: until lifted
    until_at   BIGINT
);
