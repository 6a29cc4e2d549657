-- Migration 0016: events kept only for their part in a room's state or auth chain (those fetched
-- when one of our users joined a room of other servers): not in the room's timeline, so
-- `/messages` skips them and pages back from the oldest timeline event into older history.
ALTER TABLE events ADD COLUMN outlier SMALLINT NOT NULL DEFAULT 0;
