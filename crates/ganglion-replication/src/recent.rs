//! The newest events of each room, the latest membership change of each user and room, and,
//! for every other database-backed stream, the latest position at which each user or room had a
//! row, as learned from the bus. Lets `/sync` answer "what is new in my rooms since position P"
//! from memory instead of the database, for any P this process has seen rows after, and tell
//! that nothing of a stream concerns a user since P without asking the database.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use ganglion_storage::streams::ReceiptRow;
use ganglion_types::{EventNid, StreamKind, SyncToken};
use parking_lot::RwLock;

/// Events kept per room; older ones are forgotten (and the room answers only for later `after`).
const PER_ROOM: usize = 128;
/// Receipts kept per room; older ones are forgotten (as events are).
const RECEIPTS_PER_ROOM: usize = 256;
/// Keys a [`KeyedLog`] tracks before it starts over (and answers only for later positions).
const MAX_KEYS: usize = 500_000;
/// Notifications kept per user; older ones are forgotten (as events are).
const NOTICES_PER_USER: usize = 256;

/// The latest position at which each key (a user or room id) had a row of one stream.
struct KeyedLog {
    /// Answers only for positions at or after this one: every row after it was recorded with
    /// all of its keys.
    start: i64,
    /// The last position recorded.
    last: i64,
    latest: HashMap<Arc<str>, i64>,
}

impl KeyedLog {
    fn new(start: i64) -> KeyedLog {
        KeyedLog { start, last: start, latest: HashMap::new() }
    }

    fn record<'k>(&mut self, position: i64, keys: impl Iterator<Item = &'k Arc<str>>) {
        if self.latest.len() >= MAX_KEYS {
            self.latest.clear();
            self.start = self.start.max(self.last);
        }
        for key in keys {
            self.latest.insert(key.clone(), position);
        }
        self.last = self.last.max(position);
    }

    /// A row whose keys are not all known: nothing before it can be answered any more.
    fn forget_up_to(&mut self, position: i64) {
        self.start = self.start.max(position);
        self.last = self.last.max(position);
    }

    fn changed_after<'k>(&self, mut keys: impl Iterator<Item = &'k str>, position: i64) -> Option<bool> {
        if position < self.start {
            return None;
        }
        Some(keys.any(|key| self.latest.get(key).is_some_and(|changed| *changed > position)))
    }
}

struct Room {
    /// `(position, event)`, oldest first.
    events: VecDeque<(i64, EventNid)>,
    /// Every event of the room after this position is in `events`.
    complete_after: i64,
}

/// A room's newest receipts, oldest first: every receipt of the room after `complete_after`.
struct RoomReceipts {
    rows: VecDeque<Arc<ReceiptRow>>,
    complete_after: i64,
}

/// One event that notified a user: the master's push rule decision, from the stream row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub position: i64,
    pub room_id: Arc<str>,
    pub thread_id: Arc<str>,
    pub highlight: bool,
}

/// A user's newest notices, oldest first: every one after `complete_after`.
struct UserNotices {
    notices: VecDeque<Notice>,
    complete_after: i64,
}

/// The notices of every user, for events after `start` (an events row of unknown notices, caught
/// up from the database, moves `start` past it).
struct NoticeLog {
    start: i64,
    last: i64,
    users: HashMap<Arc<str>, UserNotices>,
}

pub struct RecentEvents {
    /// Rows after this position were all recorded (the position this process started from).
    start: i64,
    rooms: RwLock<HashMap<String, Room>>,
    /// user id -> position of the latest member event about them.
    member_changes: RwLock<HashMap<String, i64>>,
    /// room id -> position of the room's latest member event.
    room_member_changes: RwLock<HashMap<String, i64>>,
    /// Per stream (indexed by `StreamKind`; events and typing unused): the rows' users and
    /// rooms. Account data, to-device and device lists are keyed by user, receipts by room,
    /// presence and device lists also by the rooms the row's user was in.
    keyed: [RwLock<KeyedLog>; StreamKind::all().len()],
    /// Receipt rows after this position were all recorded.
    receipts_start: i64,
    receipts: RwLock<HashMap<String, RoomReceipts>>,
    notices: RwLock<NoticeLog>,
    /// Receipts keyed by their user: whose read receipts moved since a position.
    readers: RwLock<KeyedLog>,
}

impl RecentEvents {
    /// Records rows after `start`'s positions (the positions this process started from).
    pub fn new(start: SyncToken) -> RecentEvents {
        RecentEvents {
            start: start.events.0,
            rooms: RwLock::new(HashMap::new()),
            member_changes: RwLock::new(HashMap::new()),
            room_member_changes: RwLock::new(HashMap::new()),
            keyed: StreamKind::all().map(|kind| RwLock::new(KeyedLog::new(start.get(kind).0))),
            receipts_start: start.receipts.0,
            receipts: RwLock::new(HashMap::new()),
            notices: RwLock::new(NoticeLog {
                start: start.events.0,
                last: start.events.0,
                users: HashMap::new(),
            }),
            readers: RwLock::new(KeyedLog::new(start.receipts.0)),
        }
    }

    /// Records whom the event at `position` notified; `None` when that is not known (a row
    /// caught up from the database): no user's notices before it can be answered then.
    pub(crate) fn record_notices(&self, room_id: &Arc<str>, position: i64, push: Option<&crate::Notified>) {
        let mut log = self.notices.write();
        log.last = log.last.max(position);
        let Some(push) = push else {
            log.users.clear();
            log.start = log.start.max(position);
            return;
        };
        if log.users.len() >= MAX_KEYS {
            log.users.clear();
            log.start = log.start.max(position - 1);
        }
        let start = log.start;
        for (user, highlight) in &push.users {
            let notices = log.users.entry(user.clone()).or_insert_with(|| UserNotices {
                notices: VecDeque::with_capacity(4),
                complete_after: start,
            });
            if notices.notices.len() == NOTICES_PER_USER
                && let Some(evicted) = notices.notices.pop_front()
            {
                notices.complete_after = notices.complete_after.max(evicted.position);
            }
            notices.notices.push_back(Notice {
                position,
                room_id: room_id.clone(),
                thread_id: push.thread_id.clone(),
                highlight: *highlight,
            });
        }
    }

    /// The events that notified `user_id` with `after < position <= up_to`, oldest first; `None`
    /// when this process cannot know them all.
    pub fn notices_between(&self, user_id: &str, after: i64, up_to: i64) -> Option<Vec<Notice>> {
        let log = self.notices.read();
        if after < log.start || up_to > log.last {
            return None;
        }
        let Some(notices) = log.users.get(user_id) else { return Some(Vec::new()) };
        if after < notices.complete_after {
            return None;
        }
        Some(
            notices
                .notices
                .iter()
                .filter(|notice| notice.position > after && notice.position <= up_to)
                .cloned()
                .collect(),
        )
    }

    /// Whether a receipt of `user_id` was recorded after `position` (of the receipts stream);
    /// `None` when this process cannot tell.
    pub fn receipt_of_user_after(&self, user_id: &str, position: i64) -> Option<bool> {
        self.readers.read().changed_after(std::iter::once(user_id), position)
    }

    /// Records a receipt row of `room_id`; `None` for a row whose receipt is not known (caught up
    /// from the database): the room's receipts before it can then no longer be answered.
    pub(crate) fn record_receipt(&self, room_id: &str, position: i64, receipt: Option<&Arc<ReceiptRow>>) {
        let mut receipts = self.receipts.write();
        let room = receipts.entry(room_id.to_owned()).or_insert_with(|| RoomReceipts {
            rows: VecDeque::with_capacity(8),
            complete_after: self.receipts_start,
        });
        let Some(receipt) = receipt else {
            room.rows.clear();
            room.complete_after = room.complete_after.max(position);
            self.readers.write().forget_up_to(position);
            return;
        };
        self.readers.write().record(position, std::iter::once(&Arc::from(receipt.user_id.as_str())));
        if room.rows.len() == RECEIPTS_PER_ROOM
            && let Some(evicted) = room.rows.pop_front()
        {
            room.complete_after = room.complete_after.max(evicted.stream_pos);
        }
        room.rows.push_back(receipt.clone());
    }

    /// The receipts of `rooms` as the database holds them for `after < position <= up_to`: each
    /// (user, type, thread)'s latest receipt when that one is in the range, by position; `None`
    /// when this process cannot know them all.
    pub fn receipts_between(&self, rooms: &[String], after: i64, up_to: i64) -> Option<Vec<ReceiptRow>> {
        let receipts = self.receipts.read();
        let mut found = Vec::new();
        for room_id in rooms {
            let Some(room) = receipts.get(room_id) else {
                if after < self.receipts_start {
                    return None;
                }
                continue;
            };
            if after < room.complete_after {
                return None;
            }
            let mut seen = std::collections::HashSet::new();
            for receipt in room.rows.iter().rev() {
                let key = (&receipt.user_id, &receipt.receipt_type, &receipt.thread_id);
                if seen.insert(key) && receipt.stream_pos > after && receipt.stream_pos <= up_to {
                    found.push(ReceiptRow::clone(receipt));
                }
            }
        }
        found.sort_unstable_by_key(|receipt| receipt.stream_pos);
        Some(found)
    }

    /// Records a row of a stream other than events under its keys (user and room ids).
    /// `keys_complete` is false for a row whose rooms are not known (caught up from the
    /// database): positions before it can then no longer be answered.
    pub(crate) fn record_keys(
        &self,
        kind: StreamKind,
        position: i64,
        keys: &[Arc<str>],
        keys_complete: bool,
    ) {
        let mut log = self.keyed[kind as usize].write();
        if keys_complete {
            log.record(position, keys.iter());
        } else {
            log.forget_up_to(position);
        }
    }

    /// Whether a row of `kind` (not events) concerning any of `keys` was recorded after
    /// `position`; `None` when this process cannot tell (the position is before what it saw).
    pub fn changed_after<'k>(
        &self,
        kind: StreamKind,
        keys: impl IntoIterator<Item = &'k str>,
        position: i64,
    ) -> Option<bool> {
        self.keyed[kind as usize].read().changed_after(keys.into_iter(), position)
    }

    /// Whether account data of `user_id` was recorded after `position` (of the account data
    /// stream); `None` when `position` is before this process started (it cannot tell).
    pub fn account_data_changed_after(&self, user_id: &str, position: i64) -> Option<bool> {
        self.changed_after(StreamKind::AccountData, [user_id], position)
    }

    pub(crate) fn record(&self, room_id: &str, position: i64, event_nid: EventNid, member_of: &[Arc<str>]) {
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
        // Newest first: skip what came after `up_to`, stop at `after`.
        Some(
            room.events
                .iter()
                .rev()
                .skip_while(|(position, _)| *position > up_to)
                .take_while(|(position, _)| *position > after)
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
