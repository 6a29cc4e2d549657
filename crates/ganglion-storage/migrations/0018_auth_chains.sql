-- Migration 0018: the auth chain index. Each state event's whole auth chain (every event reachable
-- through `auth_events`, the create event of a room v12 included), written when the event is, so
-- state resolution and the federation reads that answer with auth chains look a chain up in one
-- query instead of walking it event by event. Only state events have rows: no other event is ever
-- an auth event, or part of a room's state.
CREATE TABLE event_auth_chains (
    event_nid BIGINT NOT NULL,
    ancestor_nid BIGINT NOT NULL,
    PRIMARY KEY (event_nid, ancestor_nid)
);
-- Rooms whose events predate the index: the master indexes them when it starts.
CREATE TABLE auth_chain_backlog (
    room_nid BIGINT PRIMARY KEY
);
INSERT INTO auth_chain_backlog (room_nid) SELECT DISTINCT room_nid FROM events WHERE state_key_nid IS NOT NULL;
