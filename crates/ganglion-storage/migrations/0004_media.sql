-- Migration 0004: the media repository's metadata. Files live in the media store under the
-- SHA-256 of their content (one copy however many uploads share it); a row maps a media id to
-- its content and to what the uploader said about it. Not a stream: media workers write it.
CREATE TABLE media (
    media_id TEXT PRIMARY KEY,
    uploader TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    -- An id from /create stays without content until its upload; unused past this time it is
    -- dropped. NULL once the content is there.
    unused_expires_ts BIGINT,
    content_sha256 TEXT,
    content_type TEXT,
    filename TEXT,
    size_bytes BIGINT NOT NULL DEFAULT 0,
    uploaded_ts BIGINT,
    -- Uploaded while unauthenticated media was frozen: only the authenticated endpoints serve it.
    authenticated_only SMALLINT NOT NULL DEFAULT 0,
    quarantined SMALLINT NOT NULL DEFAULT 0
);
-- A user's uploads: the quota and the pending-ids limit count them.
CREATE INDEX media_by_uploader ON media (uploader, created_ts);
CREATE INDEX media_by_content ON media (content_sha256);
