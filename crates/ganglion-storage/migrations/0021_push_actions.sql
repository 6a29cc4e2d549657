-- Migration 0021: what the push rules decided for each new event, written in the event's own
-- transaction: one row per event naming the users of ours it notified. One row, not one per
-- user: a message in a 50-member room would otherwise scatter dozens of index entries over the
-- users' key ranges, where this appends to the end of two indexes. Unread counts read a room's
-- rows after the user's read receipt; /notifications reads the user's rooms' rows newest first;
-- the pushers read them by position.
CREATE TABLE push_notices (
    stream_pos BIGINT PRIMARY KEY,
    room_nid BIGINT NOT NULL,
    event_nid BIGINT NOT NULL,
    -- The thread root's event id, or 'main'.
    thread_id TEXT NOT NULL,
    -- JSON: {"@user:server": [highlight (0 or 1), index into actions], ...}
    users TEXT NOT NULL,
    -- JSON: the distinct action lists the users' matching rules named.
    actions TEXT NOT NULL,
    ts BIGINT NOT NULL
);
CREATE INDEX push_notices_by_room ON push_notices (room_nid, stream_pos);
