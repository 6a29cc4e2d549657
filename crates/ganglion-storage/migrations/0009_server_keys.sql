-- Migration 0009: other servers' signing keys, as fetched from them or from a notary. A key
-- verifies signatures made up to `valid_until_ts` (for a key the server lists as old, its
-- `expired_ts`). The signed answer each server gave is kept whole, so that this server can act
-- as a notary for it (`/_matrix/key/v2/query`) with the origin's signatures intact.
CREATE TABLE server_signing_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

CREATE TABLE server_key_responses (
    server_name TEXT PRIMARY KEY,
    response TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL
);
