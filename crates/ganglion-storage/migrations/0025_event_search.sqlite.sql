-- Migration 0025 (SQLite): the full-text search index of room events, an FTS5 table whose rowid
-- is the event's nid. One row per event with searchable text (a message's body, a room's name
-- or topic), written with the event and deleted by its redaction.
CREATE VIRTUAL TABLE event_search USING fts5(
    body,
    search_key UNINDEXED,
    room_nid UNINDEXED,
    tokenize = 'porter unicode61'
);
-- Rooms whose events predate the index: the master indexes them when it starts.
CREATE TABLE search_backlog (
    room_nid BIGINT PRIMARY KEY
);
INSERT INTO search_backlog (room_nid) SELECT DISTINCT room_nid FROM events;
