-- Migration 0005: thumbnails, rendered once per source content, size, method and animation, and
-- stored in the media store like any file (under their own content hash).
CREATE TABLE media_thumbnails (
    source_sha256 TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    method TEXT NOT NULL,
    animated SMALLINT NOT NULL,
    content_sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (source_sha256, width, height, method, animated)
);
