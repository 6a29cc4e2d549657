-- Migration 0022: the users' pushers (`/pushers/set`), each with how far delivery has gone:
-- the events position of the last notification handed to its gateway (or given up on).
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    -- The `data` object, as JSON.
    data TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    last_stream_pos BIGINT NOT NULL,
    PRIMARY KEY (app_id, pushkey, user_id)
);
CREATE INDEX pushers_by_user ON pushers (user_id);
