-- Migration 0017: other servers' events refused by the auth rules (against their own auth events
-- or the state before them), so the same event sent again is refused at once, for the same
-- reason, and never taken later as if it were new.
CREATE TABLE rejected_events (
    event_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    rejected_ts BIGINT NOT NULL
);
