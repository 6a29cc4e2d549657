-- Migration 0013: the room's state after an event, as the event graph has it, for events whose
-- row's snapshot (the room's current state once the event was applied) differs from it: those
-- that arrived on a fork, whose current state is the resolution of every branch.
CREATE TABLE event_state_after (
    event_nid BIGINT PRIMARY KEY,
    snapshot_nid BIGINT NOT NULL
);
