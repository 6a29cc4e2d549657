-- Migration 0025 (PostgreSQL): the full-text search index of room events. One row per event
-- with searchable text (a message's body, a room's name or topic), written with the event and
-- deleted by its redaction.
CREATE TABLE event_search (
    event_nid BIGINT PRIMARY KEY,
    room_nid BIGINT NOT NULL,
    -- `content.body`, `content.name` or `content.topic`.
    search_key TEXT NOT NULL,
    vector TSVECTOR NOT NULL
);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);
-- Rooms whose events predate the index: the master indexes them when it starts.
CREATE TABLE search_backlog (
    room_nid BIGINT PRIMARY KEY
);
INSERT INTO search_backlog (room_nid) SELECT DISTINCT room_nid FROM events;
