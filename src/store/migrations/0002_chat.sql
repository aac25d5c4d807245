-- The dating-app chat (src/chat/). The same SQL runs on SQLite and PostgreSQL.

-- Ids handed out by the store (matches, reports): one row per sequence, bumped inside the
-- transaction that uses the id.
CREATE TABLE hub_counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO hub_counters (name, value) VALUES ('match', 0), ('report', 0);

-- The latest swipe of one user on another (like, pass, super_like).
CREATE TABLE chat_likes (
    from_user  TEXT NOT NULL,
    to_user    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (from_user, to_user)
);
CREATE INDEX chat_likes_by_time ON chat_likes (from_user, created_at);

-- One row per pair of users (user_a < user_b): the unique pair is what makes two simultaneous
-- mutual likes produce exactly one match.
CREATE TABLE chat_matches (
    id         BIGINT PRIMARY KEY,
    user_a     TEXT NOT NULL,
    user_b     TEXT NOT NULL,
    -- active | closed
    state      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    closed_at  BIGINT,
    -- seq of the newest message; bumped under the row lock, so seqs are gap-free and ordered
    last_seq   BIGINT NOT NULL,
    last_at    BIGINT NOT NULL,
    UNIQUE (user_a, user_b)
);

-- Each user's side of a match: who the peer is and how far they have received and read.
CREATE TABLE chat_members (
    user_id       TEXT NOT NULL,
    match_id      BIGINT NOT NULL,
    peer_id       TEXT NOT NULL,
    delivered_seq BIGINT NOT NULL,
    read_seq      BIGINT NOT NULL,
    PRIMARY KEY (user_id, match_id)
);

CREATE TABLE chat_messages (
    match_id        BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    sender          TEXT NOT NULL,
    client_id       TEXT NOT NULL,
    body            TEXT NOT NULL,
    attachment_url  TEXT,
    attachment_type TEXT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (match_id, seq)
);
-- A retried send (same client id) finds its first copy instead of storing a second.
CREATE UNIQUE INDEX chat_messages_client ON chat_messages (match_id, sender, client_id);

CREATE TABLE chat_blocks (
    blocker    TEXT NOT NULL,
    blocked    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (blocker, blocked)
);

CREATE TABLE chat_reports (
    id           BIGINT PRIMARY KEY,
    reporter     TEXT NOT NULL,
    reported     TEXT NOT NULL,
    reason       TEXT NOT NULL,
    conversation BIGINT,
    details      TEXT,
    created_at   BIGINT NOT NULL
);

-- When a user was last connected (written when their last socket closes).
CREATE TABLE chat_users (
    user_id   TEXT PRIMARY KEY,
    last_seen BIGINT NOT NULL
);
