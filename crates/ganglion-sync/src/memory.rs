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

pub struct SyncMemory {
    /// Each user's rooms; valid while no member event about the user came along.
    pub(crate) memberships: ReadAt<UserRooms>,
    /// Each user's ignored users; valid while no account data of the user came along (every
    /// sync needs the list, and almost nobody changes it).
    pub(crate) ignored_users: ReadAt<IgnoredUsers>,
    /// (user id, filter id) -> the stored filter (filters never change once stored).
    pub(crate) filters: FilterCache,
    /// Inline filters by their text: a client sends the same one with every request.
    pub(crate) inline_filters: InlineFilterCache,
    /// Each room's member counts and first members, for room summaries; valid while no member
    /// event of the room came along.
    pub(crate) room_members: ReadAt<Arc<RoomMembers>>,
    /// (user id, device id) -> a to-device position up to which the device has no message left.
    pub(crate) to_device_clean: Mutex<HashMap<(String, String), i64>>,
    pub stats: Arc<SyncStats>,
    /// Sliding sync connections: what each connection's client was sent.
    pub(crate) sliding: crate::sliding::Connections,
    /// Each room's bump stamp, for sliding sync's room lists.
    pub(crate) bump_stamps: crate::sliding::BumpStamps,
    /// The rooms of each user's `m.direct` account data; valid while no account data of the
    /// user came along.
    pub(crate) direct_rooms: ReadAt<Arc<std::collections::HashSet<String>>>,
    /// (user id, device id) -> when the device's last answer went out and the events position
    /// then, for `sync.answer_interval_ms`.
    answered: Mutex<HashMap<(String, String), (tokio::time::Instant, i64)>>,
    /// Each user's unread counts, kept up to date from the events' notices.
    pub(crate) unread: crate::unread::UnreadMemory,
}

impl Default for SyncMemory {
    fn default() -> Self {
        SyncMemory {
            memberships: ReadAt::new(RecentEvents::membership_changed_after),
            ignored_users: ReadAt::new(RecentEvents::account_data_changed_after),
            filters: FilterCache::default(),
            inline_filters: InlineFilterCache::default(),
            room_members: ReadAt::new(|recent, room_id, position| {
                recent.room_membership_changed_after(std::iter::once(room_id), position)
            }),
            to_device_clean: Mutex::default(),
            stats: Arc::default(),
            sliding: crate::sliding::Connections::default(),
            bump_stamps: crate::sliding::BumpStamps::default(),
            direct_rooms: ReadAt::new(RecentEvents::account_data_changed_after),
            answered: Mutex::default(),
            unread: Default::default(),
        }
    }
}

/// Values read from the database by user or room id, each with the stream position read at
/// (read before the query); an entry is used while `changed_after` (a `RecentEvents` question)
/// says nothing it depends on changed since.
pub(crate) struct ReadAt<T> {
    by_key: Mutex<HashMap<String, (i64, T)>>,
    changed_after: fn(&RecentEvents, &str, i64) -> Option<bool>,
}

impl<T: Clone> ReadAt<T> {
    fn new(changed_after: fn(&RecentEvents, &str, i64) -> Option<bool>) -> ReadAt<T> {
        ReadAt { by_key: Mutex::default(), changed_after }
    }

    pub(crate) fn get(&self, recent: &RecentEvents, key: &str) -> Option<T> {
        let by_key = self.by_key.lock();
        let (read_at, value) = by_key.get(key)?;
        ((self.changed_after)(recent, key, *read_at) == Some(false)).then(|| value.clone())
    }

    pub(crate) fn insert(&self, key: &str, read_at: i64, value: T) {
        let mut by_key = self.by_key.lock();
        if by_key.len() >= MAX_USERS {
            by_key.clear();
        }
        by_key.insert(key.to_owned(), (read_at, value));
    }
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

    /// When the device's last answer went out and the events position then, if remembered.
    pub(crate) fn last_answer(&self, user_id: &str, device_id: &str) -> Option<(tokio::time::Instant, i64)> {
        self.answered.lock().get(&(user_id.to_owned(), device_id.to_owned())).copied()
    }

    /// Notes that the device was just answered, at events position `position`.
    pub(crate) fn answered(&self, user_id: &str, device_id: &str, position: i64) {
        let mut answered = self.answered.lock();
        if answered.len() >= MAX_USERS {
            let a_second_ago = tokio::time::Instant::now() - Duration::from_secs(1);
            answered.retain(|_, (at, _)| *at > a_second_ago);
        }
        answered.insert((user_id.to_owned(), device_id.to_owned()), (tokio::time::Instant::now(), position));
    }

    /// A position up to which the device is known to have no to-device message left.
    pub(crate) fn to_device_clean(&self, user_id: &str, device_id: &str) -> Option<i64> {
        self.to_device_clean.lock().get(&(user_id.to_owned(), device_id.to_owned())).copied()
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
