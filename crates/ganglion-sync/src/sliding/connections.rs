//! Sliding sync connections: per (user, device, `conn_id`), what the client was sent, so each
//! response carries only changes. A `pos` names one state of a connection; the client sends
//! back the last `pos` it received, so the state before it can be dropped, but the state it
//! names is kept until a newer one is used (a response lost on the way is asked for again).
//!
//! Invariant: state is bounded per connection ([`STATES_PER_CONNECTION`]), per user
//! ([`CONNECTIONS_PER_USER`]) and in total ([`MAX_CONNECTIONS`]), and an idle connection
//! expires ([`IDLE_EXPIRY`]); a `pos` this process does not hold (expired, evicted, from another
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
}

/// One state of a connection: what its client holds after one response.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionState {
    /// The positions the response was computed at (`None` before the first response).
    pub token: Option<SyncToken>,
    pub rooms: HashMap<Arc<str>, RoomSent>,
    /// Each list's count in the response.
    pub list_counts: BTreeMap<String, usize>,
}

struct Connection {
    /// `(seq, state)`, oldest first.
    states: VecDeque<(u64, Arc<ConnectionState>)>,
    last_used: Instant,
}

type Key = (String, String, String);

pub(crate) struct Connections {
    /// Random per process, in every `pos`: another process's `pos` is never mistaken for ours.
    tag: u32,
    next_seq: Mutex<u64>,
    by_key: Mutex<HashMap<Key, Connection>>,
}

impl Default for Connections {
    fn default() -> Self {
        Connections { tag: rand::random(), next_seq: Mutex::new(1), by_key: Mutex::default() }
    }
}

/// Why a request's connection state could not be found.
#[derive(Debug)]
pub(crate) struct UnknownPos;

impl Connections {
    /// The state `pos` names on `key`'s connection; `None` as `pos` starts the connection over.
    pub(crate) fn state_at(&self, key: &Key, pos: Option<&str>) -> Result<Arc<ConnectionState>, UnknownPos> {
        let Some(pos) = pos else { return Ok(Arc::default()) };
        let seq = self.parse(pos).ok_or(UnknownPos)?;
        let mut by_key = self.by_key.lock();
        let connection = by_key.get_mut(key).ok_or(UnknownPos)?;
        if connection.last_used.elapsed() > IDLE_EXPIRY {
            by_key.remove(key);
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
        let mut by_key = self.by_key.lock();
        if !by_key.contains_key(&key) {
            self.make_room(&mut by_key, &key, now);
        }
        let connection =
            by_key.entry(key).or_insert_with(|| Connection { states: VecDeque::new(), last_used: now });
        match acknowledged {
            Some(acknowledged) => connection.states.retain(|(at, _)| *at >= acknowledged),
            // A new connection under an old `conn_id`: its old states are gone.
            None => connection.states.clear(),
        }
        while connection.states.len() >= STATES_PER_CONNECTION {
            connection.states.pop_front();
        }
        connection.states.push_back((seq, Arc::new(state)));
        connection.last_used = now;
        format!("{:08x}_{seq}", self.tag)
    }

    /// Connections held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_key.lock().len()
    }

    fn parse(&self, pos: &str) -> Option<u64> {
        let (tag, seq) = pos.split_once('_')?;
        (u32::from_str_radix(tag, 16).ok()? == self.tag).then_some(())?;
        seq.parse().ok()
    }

    /// Before a new connection: drops expired ones, the user's least recently used past
    /// [`CONNECTIONS_PER_USER`], and the least recently used of all past [`MAX_CONNECTIONS`].
    fn make_room(&self, by_key: &mut HashMap<Key, Connection>, key: &Key, now: Instant) {
        let of_user = by_key.keys().filter(|(user, _, _)| *user == key.0).count();
        if of_user >= CONNECTIONS_PER_USER
            && let Some(oldest) = by_key
                .iter()
                .filter(|((user, _, _), _)| *user == key.0)
                .min_by_key(|(_, connection)| connection.last_used)
                .map(|(key, _)| key.clone())
        {
            by_key.remove(&oldest);
        }
        if by_key.len() >= MAX_CONNECTIONS {
            by_key.retain(|_, connection| now.duration_since(connection.last_used) <= IDLE_EXPIRY);
        }
        while by_key.len() >= MAX_CONNECTIONS {
            let Some(oldest) =
                by_key.iter().min_by_key(|(_, connection)| connection.last_used).map(|(key, _)| key.clone())
            else {
                break;
            };
            by_key.remove(&oldest);
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
}
