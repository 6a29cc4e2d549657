-- Migration 0006: antivirus verdicts, one per content hash: a file is scanned once, before it is
-- first served, whichever media id or worker serves it.
CREATE TABLE media_scans (
    content_sha256 TEXT PRIMARY KEY,
    clean SMALLINT NOT NULL,
    -- What the scanner found, for infected files.
    info TEXT,
    scanned_ts BIGINT NOT NULL
);
