-- Migration 0021: what the push rules decided for each of our users an event notifies, written
-- in the event's own transaction. Unread counts are the rows after the user's read receipt
-- (of the row's thread or unthreaded); /notifications and the pushers read them in order.
CREATE TABLE push_actions (
    user_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    room_nid BIGINT NOT NULL,
    event_nid BIGINT NOT NULL,
    -- The thread root's event id, or 'main'.
    thread_id TEXT NOT NULL,
    highlight BIGINT NOT NULL,
    -- The matched rule's actions, as JSON.
    actions TEXT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_pos)
);
CREATE INDEX push_actions_by_room ON push_actions (user_id, room_nid, stream_pos);
