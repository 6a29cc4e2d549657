-- Migration 0002: end-to-end encryption (device and cross-signing keys, one-time and fallback
-- keys, signatures, key backup), to-device messages, device-list changes and presence.
-- Booleans are BIGINT 0/1, as in 0001.

-- Invariant: `stream_pos` is allocated by the to-device stream's single writer (the master).
-- Rows are deleted once delivered, so the stream's high-water mark lives in `stream_positions`.
CREATE TABLE to_device_messages (
    stream_pos BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content_json TEXT NOT NULL,
    message_id TEXT NOT NULL
);
CREATE INDEX to_device_messages_by_device ON to_device_messages (user_id, device_id, stream_pos);

-- Client transaction ids of sendToDevice, for idempotent sends.
CREATE TABLE to_device_txns (
    sender_user TEXT NOT NULL,
    sender_device TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    PRIMARY KEY (sender_user, sender_device, txn_id)
);

-- The highest position ever written to a stream whose rows get deleted, so that the writer,
-- after a restart, never hands out a position twice.
CREATE TABLE stream_positions (
    stream TEXT PRIMARY KEY,
    stream_pos BIGINT NOT NULL
);

-- One row per change to a user's devices or keys; `stream_pos` from the device-lists stream.
CREATE TABLE device_list_changes (
    stream_pos BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL
);
CREATE INDEX device_list_changes_by_user ON device_list_changes (user_id, stream_pos);

-- Latest presence per user; `stream_pos` moves on each update.
CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    currently_active BIGINT NOT NULL DEFAULT 0,
    stream_pos BIGINT NOT NULL UNIQUE
);

-- A device's identity keys, as uploaded (canonical JSON, signatures included).
CREATE TABLE device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    keys_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Invariant: a one-time key is handed out at most once; claiming deletes it.
CREATE TABLE one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- One fallback key per algorithm; it stays claimable after use, marked used.
CREATE TABLE fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);

CREATE TABLE cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL CHECK (key_type IN ('master', 'self_signing', 'user_signing')),
    keys_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded separately from the keys they sign (`/keys/signatures/upload`).
CREATE TABLE key_signatures (
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (signer_user_id, signer_key_id, target_user_id, target_key_id)
);
CREATE INDEX key_signatures_by_target ON key_signatures (target_user_id);

-- Invariant: version numbers are never reused; a deleted version keeps its row, marked deleted.
CREATE TABLE backup_versions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data_json TEXT NOT NULL,
    etag BIGINT NOT NULL DEFAULT 0,
    deleted BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE backup_keys (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count BIGINT NOT NULL,
    is_verified BIGINT NOT NULL,
    session_data_json TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);

-- Membership changes by position: a sync reads those in its range to tell which users' device
-- lists it must report as changed or left.
CREATE INDEX memberships_by_position ON memberships (stream_pos);
