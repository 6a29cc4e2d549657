//! The newest events of each room, the latest membership change of each user and the latest
//! account data change of each user, as learned from the bus. Lets `/sync` answer "what is new
//! in my rooms since position P" from memory instead of the database, for any P this process has
//! seen rows after, and tell whether a user's cached account data is still current.

use std::collections::{HashMap, VecDeque};

use ganglion_types::{EventNid, SyncToken};
use parking_lot::RwLock;

/// Events kept per room; older ones are forgotten (and the room answers only for later `after`).
const PER_ROOM: usize = 128;

struct Room {
    /// `(position, event)`, oldest first.
    events: VecDeque<(i64, EventNid)>,
    /// Every event of the room after this position is in `events`.
    complete_after: i64,
}

pub struct RecentEvents {
    /// Rows after this position were all recorded (the position this process started from).
    start: i64,
    rooms: RwLock<HashMap<String, Room>>,
    /// user id -> position of the latest member event about them.
    member_changes: RwLock<HashMap<String, i64>>,
    /// room id -> position of the room's latest member event.
    room_member_changes: RwLock<HashMap<String, i64>>,
    /// Account data rows after this position were all recorded.
    account_data_start: i64,
    /// user id -> account data position of their latest account data change.
    account_data_changes: RwLock<HashMap<String, i64>>,
}

impl RecentEvents {
    /// Records rows after `start`'s positions (the positions this process started from).
    pub fn new(start: SyncToken) -> RecentEvents {
        RecentEvents {
            start: start.events.0,
            rooms: RwLock::new(HashMap::new()),
            member_changes: RwLock::new(HashMap::new()),
            room_member_changes: RwLock::new(HashMap::new()),
            account_data_start: start.account_data.0,
            account_data_changes: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn record_account_data(&self, position: i64, users: &[std::sync::Arc<str>]) {
        let mut changes = self.account_data_changes.write();
        for user in users {
            changes.insert(user.to_string(), position);
        }
    }

    /// Whether account data of `user_id` was recorded after `position` (of the account data
    /// stream); `None` when `position` is before this process started (it cannot tell).
    pub fn account_data_changed_after(&self, user_id: &str, position: i64) -> Option<bool> {
        if position < self.account_data_start {
            return None;
        }
        Some(self.account_data_changes.read().get(user_id).is_some_and(|changed| *changed > position))
    }

    pub(crate) fn record(
        &self,
        room_id: &str,
        position: i64,
        event_nid: EventNid,
        member_of: &[std::sync::Arc<str>],
    ) {
        {
            let mut rooms = self.rooms.write();
            let room = rooms
                .entry(room_id.to_owned())
                .or_insert_with(|| Room { events: VecDeque::with_capacity(8), complete_after: self.start });
            if room.events.len() == PER_ROOM
                && let Some((evicted, _)) = room.events.pop_front()
            {
                room.complete_after = room.complete_after.max(evicted);
            }
            room.events.push_back((position, event_nid));
        }
        if !member_of.is_empty() {
            let mut changes = self.member_changes.write();
            for user in member_of {
                changes.insert(user.to_string(), position);
            }
            self.room_member_changes.write().insert(room_id.to_owned(), position);
        }
    }

    /// The newest `limit` events of `room_id` with `after < position <= up_to`, newest first,
    /// or `None` when this process cannot know them all (`after` is before what it recorded).
    pub fn newest_between(
        &self,
        room_id: &str,
        after: i64,
        up_to: i64,
        limit: usize,
    ) -> Option<Vec<(EventNid, i64)>> {
        let rooms = self.rooms.read();
        let Some(room) = rooms.get(room_id) else {
            // No row for the room since start: nothing new, if `after` is not before start.
            return (after >= self.start).then(Vec::new);
        };
        if after < room.complete_after {
            return None;
        }
        Some(
            room.events
                .iter()
                .rev()
                .filter(|(position, _)| *position > after && *position <= up_to)
                .take(limit)
                .map(|(position, event)| (*event, *position))
                .collect(),
        )
    }

    /// Whether a member event about `user_id` was recorded after `position`; `None` when
    /// `position` is before this process started (it cannot tell).
    pub fn membership_changed_after(&self, user_id: &str, position: i64) -> Option<bool> {
        if position < self.start {
            return None;
        }
        Some(self.member_changes.read().get(user_id).is_some_and(|changed| *changed > position))
    }

    /// Whether a member event was recorded in any of `rooms` after `position`; `None` when
    /// `position` is before this process started (it cannot tell).
    pub fn room_membership_changed_after<'r>(
        &self,
        mut rooms: impl Iterator<Item = &'r str>,
        position: i64,
    ) -> Option<bool> {
        if position < self.start {
            return None;
        }
        let changes = self.room_member_changes.read();
        Some(rooms.any(|room| changes.get(room).is_some_and(|changed| *changed > position)))
    }
}
