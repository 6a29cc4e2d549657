-- Migration 0003: each room's bump stamp, the stream position of its newest event of a type
-- that moves a room up a client's room list (messages, not reactions or state changes).
-- Sliding sync sorts a user's rooms by it without reading their timelines; the master's writer
-- moves it with the room's head.
ALTER TABLE rooms ADD COLUMN bump_stream_pos BIGINT NOT NULL DEFAULT 0;
-- Rooms from before this column: their newest event of any type is the best stamp at hand.
UPDATE rooms SET bump_stream_pos = COALESCE((SELECT MAX(stream_pos) FROM events WHERE events.room_nid = rooms.room_nid), 0);
