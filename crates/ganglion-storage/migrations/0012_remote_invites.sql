-- Migration 0012: invites of our users to rooms of other servers that this server is not in.
-- The invite event is stored like any other; the room's state is known only as the stripped
-- events the inviting server sent with it, which the invitee's sync shows.
CREATE TABLE remote_invite_states (
    event_nid BIGINT PRIMARY KEY,
    state_json TEXT NOT NULL
);
