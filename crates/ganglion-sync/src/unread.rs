//! Unread notification counts, as `/sync` and sliding sync show them: the master's push rule
//! decisions (`push_actions`) after the user's read receipts.

use std::collections::{BTreeMap, HashMap};

use ganglion_replication::Notice;
use ganglion_storage::{Connect, LazyConn, push_actions::MAIN_THREAD};
use ganglion_types::{RoomNid, SyncToken};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::{SyncState, compute::SyncError};

/// `(notification_count, highlight_count)`.
pub(crate) type Counts = (i64, i64);

/// A room's unread counts: the main timeline's and each thread's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Unread {
    pub main: Counts,
    pub threads: BTreeMap<String, Counts>,
}

impl Unread {
    /// Every thread's and the main timeline's together.
    pub(crate) fn total(&self) -> Counts {
        self.threads.values().fold(self.main, |(n, h), (tn, th)| (n + tn, h + th))
    }

    /// The `unread_notifications` object: the main timeline's counts when threads are counted
    /// apart (`unread_thread_notifications` in the filter), else all of them.
    pub(crate) fn notifications_json(&self, per_thread: bool) -> Value {
        let (notifications, highlights) = if per_thread { self.main } else { self.total() };
        json!({ "notification_count": notifications, "highlight_count": highlights })
    }

    /// The `unread_thread_notifications` object: threads with something unread.
    pub(crate) fn threads_json(&self) -> Value {
        self.threads
            .iter()
            .map(|(thread, (notifications, highlights))| {
                (
                    thread.clone(),
                    json!({ "notification_count": notifications, "highlight_count": highlights }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// Users whose counts are kept at most; past this the memory starts again.
const MAX_USERS: usize = 100_000;

/// Unread counts this worker read or brought up to date, per user: a long-poller's steady state
/// (messages arriving) is answered from memory, each new event's notices (carried by its stream
/// row) added; a receipt of the user, or notices this worker cannot know, send it back to the
/// database.
#[derive(Default)]
pub(crate) struct UnreadMemory {
    users: Mutex<HashMap<String, UserUnread>>,
}

struct UserUnread {
    /// The events position the counts are as of.
    events: i64,
    /// No receipt of the user's after this receipts position is reflected.
    receipts: i64,
    /// By room id; a room missing is not known here.
    rooms: HashMap<String, Unread>,
}

impl Unread {
    fn add(&mut self, notice: &Notice) {
        let counts = match &*notice.thread_id {
            MAIN_THREAD => &mut self.main,
            thread => self.threads.entry(thread.to_owned()).or_default(),
        };
        counts.0 += 1;
        counts.1 += i64::from(notice.highlight);
    }
}

/// The user's unread counts in `rooms` (`(nid, room id)`) as of `next`'s events position, by
/// room id; from memory where it can tell, else read (and remembered).
pub(crate) async fn unread_counts(
    state: &SyncState,
    conn: &mut LazyConn,
    user_id: &str,
    rooms: &[(RoomNid, &str)],
    next: &SyncToken,
) -> Result<HashMap<String, Unread>, SyncError> {
    let mut out = HashMap::new();
    if rooms.is_empty() {
        return Ok(out);
    }
    let up_to = next.events.0;
    let mut missing = Vec::new();
    {
        let mut users = state.memory.unread.users.lock();
        let known = users.get_mut(user_id).filter(|known| {
            known.events <= up_to
                && state.recent.receipt_of_user_after(user_id, known.receipts) == Some(false)
        });
        let notices = known
            .and_then(|known| Some((state.recent.notices_between(user_id, known.events, up_to)?, known)));
        match notices {
            Some((notices, known)) => {
                for notice in &notices {
                    if let Some(unread) = known.rooms.get_mut(&*notice.room_id) {
                        unread.add(notice);
                    }
                }
                known.events = up_to;
                for (nid, room_id) in rooms {
                    match known.rooms.get(*room_id) {
                        Some(unread) => {
                            out.insert((*room_id).to_owned(), unread.clone());
                        }
                        None => missing.push((*nid, *room_id)),
                    }
                }
            }
            None => {
                users.remove(user_id);
                missing.extend_from_slice(rooms);
            }
        }
    }
    if missing.is_empty() {
        return Ok(out);
    }
    let nids: Vec<RoomNid> = missing.iter().map(|(nid, _)| *nid).collect();
    let rows = ganglion_storage::push_actions::unread_counts(conn.connection().await?, user_id, &nids, up_to)
        .await?;
    let mut read: HashMap<RoomNid, Unread> = HashMap::new();
    for row in rows {
        let unread = read.entry(row.room_nid).or_default();
        let counts = (row.notifications, row.highlights);
        if row.thread_id == MAIN_THREAD {
            unread.main = counts;
        } else {
            unread.threads.insert(row.thread_id, counts);
        }
    }
    let mut users = state.memory.unread.users.lock();
    if users.len() >= MAX_USERS && !users.contains_key(user_id) {
        users.clear();
    }
    let known = users.entry(user_id.to_owned()).or_insert_with(|| UserUnread {
        events: up_to,
        receipts: next.receipts.0,
        rooms: HashMap::new(),
    });
    // Another sync may have moved the user's counts on meanwhile: these are as of `up_to` only.
    let remember = known.events == up_to;
    for (nid, room_id) in missing {
        let unread = read.remove(&nid).unwrap_or_default();
        if remember {
            known.rooms.insert(room_id.to_owned(), unread.clone());
        }
        out.insert(room_id.to_owned(), unread);
    }
    Ok(out)
}
