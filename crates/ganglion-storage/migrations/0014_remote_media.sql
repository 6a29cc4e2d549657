-- Migration 0014: media of other servers, fetched over federation when one of our users asks
-- for it and kept like our own (the bytes in the media store under their SHA-256).
CREATE TABLE remote_media (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    filename TEXT,
    size_bytes BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, media_id)
);
