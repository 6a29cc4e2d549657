-- Migration 0020: a room's state events by their type and state key, for the events that set one
-- piece of state where no `replaces_nid` links them (history fetched from other servers).
-- Partial, so messages, most of what is written, do not pay for it.
CREATE INDEX events_room_state_key ON events (room_nid, type_nid, state_key_nid, stream_pos)
    WHERE state_key_nid IS NOT NULL;
