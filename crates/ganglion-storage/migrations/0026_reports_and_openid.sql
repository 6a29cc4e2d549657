-- Migration 0026: users' reports of events, rooms and users, kept for the server's operators
-- (`ganglion reports` lists them); and OpenID tokens, which other servers exchange for the id
-- of the user who requested them (`/openid/userinfo`).
CREATE TABLE reports (
    report_id {ID},
    -- `event`, `room` or `user`.
    kind TEXT NOT NULL,
    reporter TEXT NOT NULL,
    room_id TEXT,
    event_id TEXT,
    user_id TEXT,
    reason TEXT NOT NULL,
    score BIGINT,
    received_ts BIGINT NOT NULL
);
CREATE TABLE openid_tokens (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
