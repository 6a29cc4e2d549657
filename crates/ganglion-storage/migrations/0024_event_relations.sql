-- Migration 0024: each event's relation to another (`content.m.relates_to` with a `rel_type`),
-- written with the event, for `/relations`, `/threads` and the aggregations bundled with events.
-- A redacted event's row is deleted: redaction breaks its relation.
CREATE TABLE event_relations (
    event_nid BIGINT PRIMARY KEY,
    room_nid BIGINT NOT NULL,
    parent_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    -- An annotation's `key`; NULL for other relations.
    aggregation_key TEXT
);
CREATE INDEX event_relations_by_parent ON event_relations (parent_id, rel_type);
CREATE INDEX event_relations_by_room ON event_relations (room_nid, rel_type, parent_id);
-- Rooms whose events predate the table: the master indexes their relations when it starts.
CREATE TABLE relations_backlog (
    room_nid BIGINT PRIMARY KEY
);
INSERT INTO relations_backlog (room_nid) SELECT DISTINCT room_nid FROM events;
