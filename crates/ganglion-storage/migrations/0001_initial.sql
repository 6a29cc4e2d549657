-- Migration 0001, shared between PostgreSQL and SQLite. `{ID}` becomes the backend's
-- auto-increment primary key, `{BLOB}` its byte-string type.

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    displayname TEXT,
    avatar_url TEXT,
    created_ts BIGINT NOT NULL,
    deactivated BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE access_tokens (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL
);
CREATE INDEX access_tokens_by_device ON access_tokens (user_id, device_id);

CREATE TABLE rooms (
    room_nid {ID},
    room_id TEXT NOT NULL UNIQUE,
    room_version TEXT NOT NULL,
    is_public BIGINT NOT NULL DEFAULT 0,
    latest_event_nid BIGINT,
    current_snapshot_nid BIGINT,
    max_depth BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);

CREATE TABLE event_types (
    type_nid {ID},
    event_type TEXT NOT NULL UNIQUE
);

CREATE TABLE state_keys (
    state_key_nid {ID},
    state_key TEXT NOT NULL UNIQUE
);

-- Invariant: `stream_pos` is allocated by the events stream's single writer and committed in
-- the same transaction as the row.
CREATE TABLE events (
    event_nid {ID},
    stream_pos BIGINT NOT NULL UNIQUE,
    event_id TEXT NOT NULL UNIQUE,
    room_nid BIGINT NOT NULL,
    depth BIGINT NOT NULL,
    type_nid BIGINT NOT NULL,
    state_key_nid BIGINT,
    sender TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    -- The exact canonical JSON of the PDU, as hashed and signed.
    json TEXT NOT NULL,
    -- State of the room after this event.
    snapshot_nid BIGINT NOT NULL,
    -- For state events, the event this one replaced in the state, if any.
    replaces_nid BIGINT,
    redacted_by TEXT
);
CREATE INDEX events_by_room ON events (room_nid, stream_pos);

-- Client transaction ids, for idempotent sends.
CREATE TABLE event_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

-- Compressed state: a snapshot lists one block per non-empty hash bucket; blocks are shared
-- between snapshots, so a change rewrites one block and one snapshot row.
CREATE TABLE state_blocks (
    block_nid {ID},
    entries {BLOB} NOT NULL
);

CREATE TABLE state_snapshots (
    snapshot_nid {ID},
    room_nid BIGINT NOT NULL,
    buckets {BLOB} NOT NULL
);

-- Current membership of every user in every room, derived from the state.
CREATE TABLE memberships (
    room_nid BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_nid BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    forgotten BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (room_nid, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id, membership);

-- Latest receipt per (room, user, type, thread); `stream_pos` moves on each update.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL UNIQUE,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);

-- Global account data has room_id ''.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    data_type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_pos BIGINT NOT NULL UNIQUE,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_by_user ON account_data (user_id, stream_pos);

CREATE TABLE filters (
    user_id TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);
