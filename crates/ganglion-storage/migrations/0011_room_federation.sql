-- Migration 0011: rooms shared with other servers. A room's forward extremities (the events
-- nothing newer refers to yet: the latest event, and any other server's events that arrived
-- concurrently), as a JSON array of event ids, so that the next event of ours joins them; and
-- the PDUs of ours each other server in the room is owed, one row per destination, deleted once
-- the destination took them.
ALTER TABLE rooms ADD COLUMN forward_extremities TEXT;

CREATE TABLE federation_pdu_outbox (
    id {ID},
    destination TEXT NOT NULL,
    event_nid BIGINT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX federation_pdu_outbox_by_destination ON federation_pdu_outbox (destination, id);
