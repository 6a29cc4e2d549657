//! Bounded in-memory caches. A two-generation map: lookups promote into the young generation;
//! when it fills, the old generation is dropped. Cheap, lock-light, close enough to LRU.

use std::{collections::HashMap, hash::Hash, sync::Arc};

use ganglion_types::{BlockNid, EventNid, RoomNid, SnapshotNid, StateKeyNid, TypeNid};
use parking_lot::Mutex;

use crate::{Snapshot, StoredEvent};

pub struct BoundedCache<K, V> {
    capacity: usize,
    inner: Mutex<Generations<K, V>>,
}

/// The young and old generations, and the lookups that found or missed (counted under the lock
/// a lookup takes anyway).
struct Generations<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
    hits: u64,
    misses: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> BoundedCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        BoundedCache {
            capacity: capacity.max(2),
            inner: Mutex::new(Generations { young: HashMap::new(), old: HashMap::new(), hits: 0, misses: 0 }),
        }
    }

    /// Lookups that found their key, and lookups that did not.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        let inner = self.inner.lock();
        (inner.hits, inner.misses)
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let mut guard = self.inner.lock();
        let Generations { young, old, hits, misses } = &mut *guard;
        if let Some(value) = young.get(key) {
            *hits += 1;
            return Some(value.clone());
        }
        let Some((key, value)) = old.remove_entry(key) else {
            *misses += 1;
            return None;
        };
        *hits += 1;
        Self::insert_young(self.capacity, young, old, key, value.clone());
        Some(value)
    }

    pub fn insert(&self, key: K, value: V) {
        let mut guard = self.inner.lock();
        let Generations { young, old, .. } = &mut *guard;
        Self::insert_young(self.capacity, young, old, key, value);
    }

    pub fn clear(&self) {
        let mut guard = self.inner.lock();
        guard.young.clear();
        guard.old.clear();
    }

    pub fn remove(&self, key: &K) {
        let mut guard = self.inner.lock();
        guard.young.remove(key);
        guard.old.remove(key);
    }

    fn insert_young(capacity: usize, young: &mut HashMap<K, V>, old: &mut HashMap<K, V>, key: K, value: V) {
        if young.len() >= capacity / 2 {
            *old = std::mem::take(young);
        }
        young.insert(key, value);
    }
}

/// The `(device id, transaction id)` a client sent an event with.
pub(crate) type DeviceTxn = (Arc<str>, Arc<str>);

/// Every cache the state layer keeps, shared by all services of a process.
pub struct Caches {
    pub(crate) snapshots: BoundedCache<SnapshotNid, Snapshot>,
    pub(crate) blocks: BoundedCache<BlockNid, Arc<Vec<ganglion_storage::state::StateEntry>>>,
    pub(crate) events: BoundedCache<EventNid, StoredEvent>,
    pub(crate) event_nids: BoundedCache<String, EventNid>,
    pub(crate) type_nids: BoundedCache<String, TypeNid>,
    pub(crate) type_names: BoundedCache<TypeNid, Arc<str>>,
    pub(crate) state_key_nids: BoundedCache<String, StateKeyNid>,
    pub(crate) state_key_names: BoundedCache<StateKeyNid, Arc<str>>,
    pub(crate) room_versions: BoundedCache<RoomNid, ganglion_events::ruma::RoomVersionId>,
    /// access token -> (user id, device id)
    sessions: BoundedCache<String, (String, String)>,
    /// Bumped by every `forget_sessions`, so a lookup that read the database before a revocation
    /// does not cache its stale answer after it.
    sessions_generation: std::sync::atomic::AtomicU64,
    /// event -> the (device id, transaction id) it was sent with, `None` for none.
    pub(crate) event_txns: BoundedCache<EventNid, Option<DeviceTxn>>,
    /// Events in `/sync`'s client format, serialised once.
    pub(crate) sync_events: BoundedCache<EventNid, Arc<crate::SharedClientEvent>>,
    /// Bumped by every `forget_event` (a redaction).
    redactions: std::sync::atomic::AtomicU64,
    /// (user id, device id) -> the device's one-time key counts and unused fallback key types.
    key_counts: BoundedCache<(String, String), KeyCounts>,
    /// Bumped by every `forget_key_counts`, as `sessions_generation`.
    key_counts_generation: std::sync::atomic::AtomicU64,
}

/// A device's unclaimed one-time keys by algorithm and the algorithms of its unused fallback
/// keys, as `/sync` reports them.
pub type KeyCounts = Arc<(std::collections::BTreeMap<String, i64>, Vec<String>)>;

impl Default for Caches {
    fn default() -> Self {
        Caches::new()
    }
}

impl Caches {
    pub fn new() -> Caches {
        Caches {
            snapshots: BoundedCache::new(4_096),
            blocks: BoundedCache::new(65_536),
            events: BoundedCache::new(20_000),
            event_nids: BoundedCache::new(20_000),
            type_nids: BoundedCache::new(10_000),
            type_names: BoundedCache::new(10_000),
            state_key_nids: BoundedCache::new(200_000),
            state_key_names: BoundedCache::new(200_000),
            room_versions: BoundedCache::new(100_000),
            sessions: BoundedCache::new(100_000),
            sessions_generation: std::sync::atomic::AtomicU64::new(0),
            event_txns: BoundedCache::new(100_000),
            sync_events: BoundedCache::new(8_192),
            redactions: std::sync::atomic::AtomicU64::new(0),
            key_counts: BoundedCache::new(100_000),
            key_counts_generation: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Caches {
    /// Each cache's name with its hits and misses so far.
    pub fn hits_and_misses(&self) -> Vec<(&'static str, (u64, u64))> {
        vec![
            ("snapshots", self.snapshots.hits_and_misses()),
            ("state_blocks", self.blocks.hits_and_misses()),
            ("events", self.events.hits_and_misses()),
            ("event_ids", self.event_nids.hits_and_misses()),
            ("event_types", self.type_nids.hits_and_misses()),
            ("event_type_names", self.type_names.hits_and_misses()),
            ("state_keys", self.state_key_nids.hits_and_misses()),
            ("state_key_names", self.state_key_names.hits_and_misses()),
            ("room_versions", self.room_versions.hits_and_misses()),
            ("sessions", self.sessions.hits_and_misses()),
            ("event_txns", self.event_txns.hits_and_misses()),
            ("sync_events", self.sync_events.hits_and_misses()),
            ("key_counts", self.key_counts.hits_and_misses()),
        ]
    }

    /// Forgets everything (after a rolled-back write whose ids the database may reuse).
    pub fn clear(&self) {
        self.forget_sessions();
        self.snapshots.clear();
        self.blocks.clear();
        self.events.clear();
        self.event_nids.clear();
        self.type_nids.clear();
        self.type_names.clear();
        self.state_key_nids.clear();
        self.state_key_names.clear();
        self.sync_events.clear();
        self.redactions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.forget_all_key_counts();
    }
}

impl Caches {
    /// Counts redactions: a cached client event that shows another event (`prev_content`)
    /// built before the latest redaction may show it unredacted.
    pub fn redactions_generation(&self) -> u64 {
        self.redactions.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Drops an event whose row changed (it was redacted), and every serialised form of it.
    pub fn forget_event(&self, nid: EventNid) {
        self.redactions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.events.remove(&nid);
        self.sync_events.remove(&nid);
    }

    /// A device's key counts seen recently.
    pub fn key_counts(&self, user_id: &str, device_id: &str) -> Option<KeyCounts> {
        self.key_counts.get(&(user_id.to_owned(), device_id.to_owned()))
    }

    /// The current key counts generation: read it before reading counts from the database.
    pub fn key_counts_generation(&self) -> u64 {
        self.key_counts_generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Caches counts read from the database while the generation was `generation`; dropped
    /// again if the device's keys changed in between.
    pub fn remember_key_counts(&self, generation: u64, user_id: &str, device_id: &str, counts: KeyCounts) {
        let key = (user_id.to_owned(), device_id.to_owned());
        self.key_counts.insert(key.clone(), counts);
        if self.key_counts_generation() != generation {
            self.key_counts.remove(&key);
        }
    }

    /// A device's one-time or fallback keys changed (uploaded, claimed).
    pub fn forget_key_counts(&self, user_id: &str, device_id: &str) {
        self.key_counts_generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.key_counts.remove(&(user_id.to_owned(), device_id.to_owned()));
    }

    /// Every cached count may be stale (invalidations were missed).
    pub fn forget_all_key_counts(&self) {
        self.key_counts_generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.key_counts.clear();
    }
}

impl Caches {
    /// The `(user id, device id)` of an access token seen recently.
    pub fn session(&self, access_token: &str) -> Option<(String, String)> {
        self.sessions.get(access_token)
    }

    /// The current sessions generation: read it before looking a token up in the database.
    pub fn sessions_generation(&self) -> u64 {
        self.sessions_generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Caches a session read from the database while the sessions generation was `generation`;
    /// dropped again if a revocation came in between (the database answer may predate it).
    pub fn remember_session(&self, generation: u64, access_token: &str, user_id: &str, device_id: &str) {
        self.sessions.insert(access_token.to_owned(), (user_id.to_owned(), device_id.to_owned()));
        if self.sessions_generation() != generation {
            self.sessions.remove(&access_token.to_owned());
        }
    }

    /// Forgets every cached session; called whenever any token is revoked (other processes
    /// learn of revocations through the caches stream).
    pub fn forget_sessions(&self) {
        self.sessions_generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.sessions.clear();
    }
}

impl Caches {
    /// Records the transaction id a just-persisted event was sent with (or that it had none).
    pub fn remember_event_txn(&self, event_nid: EventNid, txn: Option<(&str, &str)>) {
        self.event_txns.insert(event_nid, txn.map(|(device, txn_id)| (Arc::from(device), Arc::from(txn_id))));
    }
}
