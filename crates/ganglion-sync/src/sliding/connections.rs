//! Sliding sync connections: per (user, device, `conn_id`), what the client was sent, so each
//! response carries only changes. A `pos` names one state of a connection; the client sends
//! back the last `pos` it received, so the state before it can be dropped, but the state it
//! names is kept until a newer one is used (a response lost on the way is asked for again).
//!
//! Invariant: state is bounded per connection ([`STATES_PER_CONNECTION`]), per user
//! ([`CONNECTIONS_PER_USER`]) and in total ([`MAX_CONNECTIONS`], [`MAX_ROOM_ENTRIES`]), and an
//! idle connection expires ([`IDLE_EXPIRY`]); a `pos` this process does not hold (expired, evicted, from another
//! sync worker or an earlier process: `pos` carries this process's random tag) is answered
//! `M_UNKNOWN_POS`, never with another connection's or a guessed state.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use ganglion_types::SyncToken;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::request::RoomConfig;

const STATES_PER_CONNECTION: usize = 3;
const CONNECTIONS_PER_USER: usize = 32;
const MAX_CONNECTIONS: usize = 50_000;
const IDLE_EXPIRY: Duration = Duration::from_secs(60 * 60);
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Room entries held by all connections' states together (about 100 bytes each): past it the
/// least recently used connections are dropped (their clients get `M_UNKNOWN_POS`).
const MAX_ROOM_ENTRIES: usize = 4_000_000;
/// Member events remembered as sent per room for `$LAZY`; past it the set starts over (members
/// are sent again, which costs bytes, not correctness).
pub(crate) const MAX_LAZY_MEMBERS: usize = 1_000;

/// What a connection's client holds of one room.
#[derive(Debug, Clone)]
pub(crate) struct RoomSent {
    /// The client has the room's timeline and state up to this events position.
    pub up_to: i64,
    /// The user's membership it was sent with (a change sends the room whole again).
    pub membership: Arc<str>,
    /// The config it was sent with (a change of `required_state` sends the state it asks for).
    pub config: Arc<RoomConfig>,
    /// Members whose member event went out for `$LAZY`.
    pub lazy_members: Arc<HashSet<String>>,
    /// The positions of the last response that covered the room: its receipts, typing and room
    /// account data went out up to there (a room back in range catches up from here).
    pub covered_at: Arc<SyncToken>,
    /// The unread counts it was last sent with.
    pub unread: crate::unread::Counts,
}

/// One state of a connection: what its client holds after one response.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionState {
    /// The positions the response was computed at (`None` before the first response).
    pub token: Option<SyncToken>,
    pub rooms: HashMap<Arc<str>, RoomSent>,
    /// Each list's count in the response.
    pub list_counts: BTreeMap<String, usize>,
    /// The ignore list the rooms were sent under.
    pub ignored: Option<crate::memory::IgnoredUsers>,
}

struct Connection {
    /// `(seq, state)`, oldest first.
    states: VecDeque<(u64, Arc<ConnectionState>)>,
    last_used: Instant,
}

impl Connection {
    /// Room entries its states hold: what a connection costs in memory.
    fn entries(&self) -> usize {
        self.states.iter().map(|(_, state)| state.rooms.len() + 1).sum()
    }
}

type Key = (String, String, String);

#[derive(Default)]
struct Held {
    by_key: HashMap<Key, Connection>,
    /// Sum of [`Connection::entries`].
    entries: usize,
    last_sweep: Option<Instant>,
}

impl Held {
    fn remove(&mut self, key: &Key) {
        if let Some(connection) = self.by_key.remove(key) {
            self.entries -= connection.entries();
        }
    }

    fn least_recently_used(&self, of_user: Option<&str>) -> Option<Key> {
        self.by_key
            .iter()
            .filter(|((user, _, _), _)| of_user.is_none_or(|of_user| user == of_user))
            .min_by_key(|(_, connection)| connection.last_used)
            .map(|(key, _)| key.clone())
    }
}

pub(crate) struct Connections {
    /// Random per process, in every `pos`: another process's `pos` is never mistaken for ours.
    tag: u32,
    next_seq: Mutex<u64>,
    held: Mutex<Held>,
    /// Room entries held in all, before the least recently used connections are dropped.
    max_entries: usize,
}

impl Default for Connections {
    fn default() -> Self {
        Connections::with_max_entries(MAX_ROOM_ENTRIES)
    }
}

/// Why a request's connection state could not be found.
#[derive(Debug)]
pub(crate) struct UnknownPos;

impl Connections {
    fn with_max_entries(max_entries: usize) -> Connections {
        Connections { tag: rand::random(), next_seq: Mutex::new(1), held: Mutex::default(), max_entries }
    }

    /// The state `pos` names on `key`'s connection; `None` as `pos` starts the connection over.
    pub(crate) fn state_at(&self, key: &Key, pos: Option<&str>) -> Result<Arc<ConnectionState>, UnknownPos> {
        let Some(pos) = pos else { return Ok(Arc::default()) };
        let seq = self.parse(pos).ok_or(UnknownPos)?;
        let mut held = self.held.lock();
        let connection = held.by_key.get(key).ok_or(UnknownPos)?;
        if connection.last_used.elapsed() > IDLE_EXPIRY {
            held.remove(key);
            return Err(UnknownPos);
        }
        let state = connection.states.iter().find(|(at, _)| *at == seq).map(|(_, state)| state.clone());
        state.ok_or(UnknownPos)
    }

    /// Stores the state after a response to a request at `pos` and returns the new `pos`.
    /// States older than `pos` are dropped: the client has acknowledged `pos`.
    pub(crate) fn store(&self, key: Key, pos: Option<&str>, state: ConnectionState) -> String {
        let seq = {
            let mut next = self.next_seq.lock();
            *next += 1;
            *next
        };
        let acknowledged = pos.and_then(|pos| self.parse(pos));
        let now = Instant::now();
        let mut held = self.held.lock();
        self.sweep(&mut held, now);
        if !held.by_key.contains_key(&key) {
            let of_user = held.by_key.keys().filter(|(user, _, _)| *user == key.0).count();
            if of_user >= CONNECTIONS_PER_USER
                && let Some(oldest) = held.least_recently_used(Some(&key.0))
            {
                held.remove(&oldest);
            }
            while held.by_key.len() >= MAX_CONNECTIONS
                && let Some(oldest) = held.least_recently_used(None)
            {
                held.remove(&oldest);
            }
        }
        let mut connection = held
            .by_key
            .remove(&key)
            .unwrap_or_else(|| Connection { states: VecDeque::new(), last_used: now });
        held.entries -= connection.entries();
        match acknowledged {
            Some(acknowledged) => connection.states.retain(|(at, _)| *at >= acknowledged),
            // A new connection under an old `conn_id`: its old states are gone.
            None => connection.states.clear(),
        }
        // The acknowledged state stays (the client asks for it again when this answer is lost
        // or its request cancelled, as Element X does when it opens a room): answers it never
        // received go first.
        while connection.states.len() >= STATES_PER_CONNECTION {
            let oldest_unacknowledged =
                usize::from(connection.states.front().is_some_and(|(at, _)| Some(*at) == acknowledged));
            connection.states.remove(oldest_unacknowledged);
        }
        connection.states.push_back((seq, Arc::new(state)));
        connection.last_used = now;
        let entries = connection.entries();
        // Over the budget: the least recently used connections go first (never this one).
        while held.entries + entries > self.max_entries
            && let Some(oldest) = held.least_recently_used(None)
        {
            held.remove(&oldest);
        }
        held.entries += entries;
        held.by_key.insert(key, connection);
        format!("{:08x}_{seq}", self.tag)
    }

    /// Connections held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.lock().by_key.len()
    }

    fn parse(&self, pos: &str) -> Option<u64> {
        let (tag, seq) = pos.split_once('_')?;
        (u32::from_str_radix(tag, 16).ok()? == self.tag).then_some(())?;
        seq.parse().ok()
    }

    /// Drops the connections idle past [`IDLE_EXPIRY`], at most once a minute.
    fn sweep(&self, held: &mut Held, now: Instant) {
        if held.last_sweep.is_some_and(|last| now.duration_since(last) < SWEEP_EVERY) {
            return;
        }
        held.last_sweep = Some(now);
        let expired: Vec<Key> = held
            .by_key
            .iter()
            .filter(|(_, connection)| now.duration_since(connection.last_used) > IDLE_EXPIRY)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            held.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str, conn: &str) -> Key {
        (user.to_owned(), "DEV".to_owned(), conn.to_owned())
    }

    #[test]
    fn a_pos_names_one_state_until_a_newer_one_is_used() {
        let connections = Connections::default();
        let first = connections.store(key("@a:x", "c"), None, ConnectionState::default());
        let second = connections.store(key("@a:x", "c"), Some(&first), ConnectionState::default());
        // The first response may have been lost: its pos still works until the second is used.
        assert!(connections.state_at(&key("@a:x", "c"), Some(&first)).is_ok());
        // Answers to the second pos lost (requests cancelled) twice: the second pos still works.
        let _lost = connections.store(key("@a:x", "c"), Some(&second), ConnectionState::default());
        let _lost_again = connections.store(key("@a:x", "c"), Some(&second), ConnectionState::default());
        assert!(connections.state_at(&key("@a:x", "c"), Some(&second)).is_ok());
        let _third = connections.store(key("@a:x", "c"), Some(&second), ConnectionState::default());
        assert!(connections.state_at(&key("@a:x", "c"), Some(&first)).is_err());
        assert!(connections.state_at(&key("@a:x", "c"), Some(&second)).is_ok());
        // Another connection, user or process never shares it.
        assert!(connections.state_at(&key("@a:x", "other"), Some(&second)).is_err());
        assert!(connections.state_at(&key("@b:x", "c"), Some(&second)).is_err());
        assert!(Connections::default().state_at(&key("@a:x", "c"), Some(&second)).is_err());
        assert!(connections.state_at(&key("@a:x", "c"), Some("junk")).is_err());
    }

    #[test]
    fn a_user_holds_a_bounded_number_of_connections() {
        let connections = Connections::default();
        let first = connections.store(key("@a:x", "0"), None, ConnectionState::default());
        for index in 1..=CONNECTIONS_PER_USER {
            connections.store(key("@a:x", &index.to_string()), None, ConnectionState::default());
        }
        assert_eq!(connections.len(), CONNECTIONS_PER_USER);
        assert!(connections.state_at(&key("@a:x", "0"), Some(&first)).is_err());
    }

    fn with_rooms(count: usize) -> ConnectionState {
        let sent = RoomSent {
            up_to: 1,
            membership: Arc::from("join"),
            config: Arc::default(),
            lazy_members: Arc::default(),
            covered_at: Arc::default(),
            unread: (0, 0),
        };
        ConnectionState {
            rooms: (0..count)
                .map(|index| (Arc::from(format!("!{index}:x").as_str()), sent.clone()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn past_the_entry_budget_the_least_recently_used_connections_go() {
        let connections = Connections::with_max_entries(250);
        let old = connections.store(key("@a:x", "old"), None, with_rooms(100));
        let mid = connections.store(key("@b:x", "mid"), None, with_rooms(100));
        // The third does not fit with both others: the least recently used one goes.
        let new = connections.store(key("@c:x", "new"), None, with_rooms(100));
        assert!(connections.state_at(&key("@a:x", "old"), Some(&old)).is_err());
        assert!(connections.state_at(&key("@b:x", "mid"), Some(&mid)).is_ok());
        assert!(connections.state_at(&key("@c:x", "new"), Some(&new)).is_ok());
        // A connection's own older states count too, and are replaced, not added up.
        let newer = connections.store(key("@c:x", "new"), Some(&new), with_rooms(100));
        assert!(connections.state_at(&key("@c:x", "new"), Some(&newer)).is_ok());
        assert!(connections.state_at(&key("@b:x", "mid"), Some(&mid)).is_err());
        assert_eq!(connections.held.lock().entries, 202);
    }
}
