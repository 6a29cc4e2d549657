//! What the sync role keeps in memory between requests, besides the process-wide `Caches` and
//! `RecentEvents`: each user's rooms and ignore list, each room's summary members, stored filters, how far each device's
//! to-device messages are known to be deleted, and counters of the answers given from memory
//! and from the database.
//!
//! Invariant: an entry is used only while `RecentEvents` vouches that nothing it depends on
//! changed since it was read; everything else goes to the database.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ganglion_replication::RecentEvents;
use ganglion_state::BoundedCache;
use ganglion_storage::streams::UserRoomRow;
use parking_lot::Mutex;

use crate::filter::Filter;

/// Entries of a per-user map before it starts over.
const MAX_USERS: usize = 100_000;

/// A user's rooms, as read from the database.
pub(crate) type UserRooms = Arc<Vec<UserRoomRow>>;

/// The users a user ignores (`m.ignored_user_list`), parsed.
pub(crate) type IgnoredUsers = Arc<std::collections::HashSet<String>>;

#[derive(Default)]
pub struct SyncMemory {
    pub(crate) memberships: MembershipCache,
    pub(crate) ignored_users: IgnoredUsersCache,
    /// (user id, filter id) -> the stored filter (filters never change once stored).
    pub(crate) filters: FilterCache,
    /// Inline filters by their text: a client sends the same one with every request.
    pub(crate) inline_filters: InlineFilterCache,
    /// Each room's member counts and first members, for room summaries.
    pub(crate) room_members: RoomMembersCache,
    /// (user id, device id) -> a to-device position up to which the device has no message left.
    pub(crate) to_device_clean: Mutex<HashMap<(String, String), i64>>,
    pub stats: Arc<SyncStats>,
}

impl SyncMemory {
    /// Notes that the device has no to-device message at or before `position`.
    pub(crate) fn to_device_clean_up_to(&self, user_id: &str, device_id: &str, position: i64) {
        let mut clean = self.to_device_clean.lock();
        if clean.len() >= MAX_USERS {
            clean.clear();
        }
        let entry = clean.entry((user_id.to_owned(), device_id.to_owned())).or_insert(position);
        *entry = (*entry).max(position);
    }

    /// A position up to which the device is known to have no to-device message left.
    pub(crate) fn to_device_clean(&self, user_id: &str, device_id: &str) -> Option<i64> {
        self.to_device_clean.lock().get(&(user_id.to_owned(), device_id.to_owned())).copied()
    }
}

/// Each user's rooms as last read from the database, with the events position read at; valid
/// while `RecentEvents` saw no member event about the user since.
#[derive(Default)]
pub(crate) struct MembershipCache {
    by_user: Mutex<HashMap<String, (i64, UserRooms)>>,
}

impl MembershipCache {
    pub(crate) fn get(&self, recent: &RecentEvents, user_id: &str) -> Option<UserRooms> {
        let by_user = self.by_user.lock();
        let (loaded_at, rows) = by_user.get(user_id)?;
        (recent.membership_changed_after(user_id, *loaded_at) == Some(false)).then(|| rows.clone())
    }

    pub(crate) fn insert(&self, user_id: &str, loaded_at: i64, rows: UserRooms) {
        let mut by_user = self.by_user.lock();
        if by_user.len() >= MAX_USERS {
            by_user.clear();
        }
        by_user.insert(user_id.to_owned(), (loaded_at, rows));
    }
}

/// Each user's ignored users as last read from the database, with the account data position
/// read at; valid while `RecentEvents` saw no account data of the user since. Every sync needs
/// the list, and almost nobody changes it.
#[derive(Default)]
pub(crate) struct IgnoredUsersCache {
    by_user: Mutex<HashMap<String, (i64, IgnoredUsers)>>,
}

impl IgnoredUsersCache {
    pub(crate) fn get(&self, recent: &RecentEvents, user_id: &str) -> Option<IgnoredUsers> {
        let by_user = self.by_user.lock();
        let (loaded_at, ignored) = by_user.get(user_id)?;
        (recent.account_data_changed_after(user_id, *loaded_at) == Some(false)).then(|| ignored.clone())
    }

    pub(crate) fn insert(&self, user_id: &str, loaded_at: i64, ignored: IgnoredUsers) {
        let mut by_user = self.by_user.lock();
        if by_user.len() >= MAX_USERS {
            by_user.clear();
        }
        by_user.insert(user_id.to_owned(), (loaded_at, ignored));
    }
}

/// What a room summary needs of a room's memberships: the joined and invited counts, and the
/// first members (by membership position) who are joined or invited, and who left or were
/// banned, one more than the summary's heroes so that the viewer can be left out.
pub(crate) struct RoomMembers {
    pub joined: i64,
    pub invited: i64,
    pub active: Vec<String>,
    pub departed: Vec<String>,
}

/// Each room's members as last read from the database, with the events position read at;
/// valid while `RecentEvents` saw no member event in the room since.
#[derive(Default)]
pub(crate) struct RoomMembersCache {
    by_room: Mutex<HashMap<String, (i64, Arc<RoomMembers>)>>,
}

impl RoomMembersCache {
    pub(crate) fn get(&self, recent: &RecentEvents, room_id: &str) -> Option<Arc<RoomMembers>> {
        let by_room = self.by_room.lock();
        let (loaded_at, members) = by_room.get(room_id)?;
        (recent.room_membership_changed_after(std::iter::once(room_id), *loaded_at) == Some(false))
            .then(|| members.clone())
    }

    pub(crate) fn insert(&self, room_id: &str, loaded_at: i64, members: Arc<RoomMembers>) {
        let mut by_room = self.by_room.lock();
        if by_room.len() >= MAX_USERS {
            by_room.clear();
        }
        by_room.insert(room_id.to_owned(), (loaded_at, members));
    }
}

/// Stored filters by (user id, filter id): a stored filter never changes.
pub(crate) struct FilterCache(BoundedCache<(String, i64), Arc<Filter>>);

impl Default for FilterCache {
    fn default() -> Self {
        FilterCache(BoundedCache::new(MAX_USERS))
    }
}

impl FilterCache {
    pub(crate) fn get(&self, user_id: &str, filter_id: i64) -> Option<Arc<Filter>> {
        self.0.get(&(user_id.to_owned(), filter_id))
    }

    pub(crate) fn insert(&self, user_id: &str, filter_id: i64, filter: Arc<Filter>) {
        self.0.insert((user_id.to_owned(), filter_id), filter);
    }
}

/// Parsed inline filters by their JSON text.
pub(crate) struct InlineFilterCache(BoundedCache<String, Arc<Filter>>);

impl Default for InlineFilterCache {
    fn default() -> Self {
        InlineFilterCache(BoundedCache::new(4_096))
    }
}

impl InlineFilterCache {
    pub(crate) fn get(&self, text: &str) -> Option<Arc<Filter>> {
        self.0.get(text)
    }

    pub(crate) fn insert(&self, text: &str, filter: Arc<Filter>) {
        self.0.insert(text.to_owned(), filter);
    }
}

/// How `/sync` answers were computed: entirely from memory, or with at least one database query.
#[derive(Default)]
pub struct SyncStats {
    from_memory: AtomicU64,
    from_database: AtomicU64,
}

impl SyncStats {
    pub(crate) fn count(&self, from_database: bool) {
        let counter = if from_database { &self.from_database } else { &self.from_memory };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (answers from memory, answers from the database) since the process started.
    pub fn totals(&self) -> (u64, u64) {
        (self.from_memory.load(Ordering::Relaxed), self.from_database.load(Ordering::Relaxed))
    }

    /// Logs the answers of each `period` in which there were any, until the process ends.
    pub async fn log_every(self: Arc<Self>, period: Duration) {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = self.totals();
        loop {
            interval.tick().await;
            let now = self.totals();
            let (memory, database) = (now.0 - last.0, now.1 - last.1);
            if memory + database > 0 {
                tracing::info!(
                    from_memory = memory,
                    from_database = database,
                    seconds = period.as_secs(),
                    "sync answers"
                );
            }
            last = now;
        }
    }
}
