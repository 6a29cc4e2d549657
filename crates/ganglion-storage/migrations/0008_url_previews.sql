-- Migration 0008: URL previews, kept a while so that a room's members asking for the same link
-- cost one fetch, whichever media worker they ask.
CREATE TABLE media_url_previews (
    url TEXT PRIMARY KEY,
    -- The answer (OpenGraph JSON).
    og TEXT NOT NULL,
    fetched_ts BIGINT NOT NULL
);
