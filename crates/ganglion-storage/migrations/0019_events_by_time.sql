-- Migration 0019: a room's events by the time their server sent them, for `/timestamp_to_event`.
CREATE INDEX events_room_ts ON events (room_nid, origin_server_ts);
