//! Room state as the rest of the server sees it: snapshots materialised from shared storage
//! blocks and cached in memory, interned type and state-key names, and a cache of parsed PDUs.
//!
//! A linear history needs no state resolution: the state after an event is the state before it
//! plus the event itself. State resolution arrives with federation, where histories fork.

mod aggregations;
mod cache;
pub mod directory;
pub mod hierarchy;
pub mod keys;
mod read;
mod snapshot;

pub use aggregations::AggregationViewer;
pub use cache::{BoundedCache, Caches, KeyCounts};
pub use read::SharedClientEvent;
pub use snapshot::{BUCKETS, Snapshot, bucket_of};

use std::{collections::HashMap, sync::Arc};

use ganglion_events::{Pdu, ruma::OwnedEventId};
use ganglion_storage::{Connect, StorageError, events::EventRow, state as store};
use ganglion_types::{ErrorClass, EventNid, HasErrorClass, RoomNid, SnapshotNid, StateKeyNid, TypeNid};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("corrupt event {0}: {1}")]
    CorruptEvent(String, String),
}

impl HasErrorClass for StateError {
    fn class(&self) -> ErrorClass {
        match self {
            StateError::Storage(error) => error.class(),
            StateError::CorruptEvent(..) => ErrorClass::Internal,
        }
    }
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// A persisted event with its row metadata and parsed PDU.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub row: Arc<EventRow>,
    pub pdu: Arc<Pdu>,
}

impl StoredEvent {
    pub fn from_row(row: EventRow) -> Result<StoredEvent> {
        let event_id = OwnedEventId::try_from(row.event_id.as_str())
            .map_err(|e| StateError::CorruptEvent(row.event_id.clone(), e.to_string()))?;
        let pdu = Pdu::from_json(event_id, Arc::from(row.json.as_str()))
            .map_err(|e| StateError::CorruptEvent(row.event_id.clone(), e.to_string()))?;
        Ok(StoredEvent { row: Arc::new(row), pdu: Arc::new(pdu) })
    }
}

impl Caches {
    /// The snapshot with `nid`, materialised from its blocks (cached).
    pub async fn snapshot(&self, conn: &mut impl Connect, nid: SnapshotNid) -> Result<Snapshot> {
        if let Some(snapshot) = self.snapshots.get(&nid) {
            return Ok(snapshot);
        }
        let buckets = store::state_snapshot_buckets(conn.connection().await?, nid).await?;
        let mut missing = Vec::new();
        let mut blocks = HashMap::with_capacity(buckets.len());
        for (_, block_nid) in &buckets {
            match self.blocks.get(block_nid) {
                Some(entries) => {
                    blocks.insert(*block_nid, entries);
                }
                None => missing.push(*block_nid),
            }
        }
        if !missing.is_empty() {
            for (block_nid, entries) in store::state_blocks_by_nid(conn.connection().await?, &missing).await?
            {
                let entries = Arc::new(entries);
                self.blocks.insert(block_nid, entries.clone());
                blocks.insert(block_nid, entries);
            }
        }
        let snapshot = Snapshot::from_parts(
            Some(nid),
            buckets.into_iter().filter_map(|(bucket, block_nid)| {
                blocks.get(&block_nid).map(|entries| (bucket, block_nid, entries.clone()))
            }),
        );
        self.snapshots.insert(nid, snapshot.clone());
        Ok(snapshot)
    }

    /// Writes the snapshot `base` + `changes` (one new block per touched bucket, one snapshot
    /// row) and returns it. Call inside the transaction that persists the changing event.
    pub async fn write_snapshot(
        &self,
        conn: &mut impl Connect,
        room_nid: RoomNid,
        base: &Snapshot,
        changes: &[store::StateEntry],
    ) -> Result<Snapshot> {
        let mut next = base.clone();
        for (bucket, entries) in base.apply(changes) {
            let block_nid = store::insert_state_block(conn.connection().await?, &entries).await?;
            next.set_bucket(bucket, block_nid, entries);
        }
        let nid =
            store::insert_state_snapshot(conn.connection().await?, room_nid, &next.bucket_list()).await?;
        next.nid = Some(nid);
        Ok(next)
    }

    /// Caches a snapshot written by [`Caches::write_snapshot`], once its transaction committed.
    /// (SQLite may reuse the ids of a rolled-back transaction, so caching earlier could poison
    /// the cache.)
    pub fn remember_snapshot(&self, snapshot: &Snapshot) {
        if let Some(nid) = snapshot.nid {
            for (block_nid, entries) in snapshot.blocks() {
                self.blocks.insert(block_nid, entries);
            }
            self.snapshots.insert(nid, snapshot.clone());
        }
    }

    /// Interned event type NID (inserting when new).
    pub async fn type_nid(&self, conn: &mut impl Connect, name: &str) -> Result<TypeNid> {
        if let Some(nid) = self.type_nids.get(name) {
            return Ok(nid);
        }
        let nid = store::type_nid_or_insert(conn.connection().await?, name).await?;
        self.type_nids.insert(name.to_owned(), nid);
        self.type_names.insert(nid, Arc::from(name));
        Ok(nid)
    }

    /// Interned event type NID, without inserting.
    pub async fn existing_type_nid(&self, conn: &mut impl Connect, name: &str) -> Result<Option<TypeNid>> {
        if let Some(nid) = self.type_nids.get(name) {
            return Ok(Some(nid));
        }
        let nid = store::type_nid_by_name(conn.connection().await?, name).await?;
        if let Some(nid) = nid {
            self.type_nids.insert(name.to_owned(), nid);
            self.type_names.insert(nid, Arc::from(name));
        }
        Ok(nid)
    }

    pub async fn state_key_nid(&self, conn: &mut impl Connect, key: &str) -> Result<StateKeyNid> {
        if let Some(nid) = self.state_key_nids.get(key) {
            return Ok(nid);
        }
        let nid = store::state_key_nid_or_insert(conn.connection().await?, key).await?;
        self.state_key_nids.insert(key.to_owned(), nid);
        self.state_key_names.insert(nid, Arc::from(key));
        Ok(nid)
    }

    /// The NIDs of `keys` (interning the new ones), in a few statements however many there are.
    pub async fn state_key_nids(
        &self,
        conn: &mut impl Connect,
        keys: &[&str],
    ) -> Result<HashMap<String, StateKeyNid>> {
        let mut nids = HashMap::with_capacity(keys.len());
        let mut missing: Vec<&str> = Vec::new();
        for key in keys {
            match self.state_key_nids.get(*key) {
                Some(nid) => {
                    nids.insert((*key).to_owned(), nid);
                }
                None => missing.push(key),
            }
        }
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            for (key, nid) in store::state_key_nids_or_insert(conn.connection().await?, &missing).await? {
                self.state_key_nids.insert(key.clone(), nid);
                self.state_key_names.insert(nid, Arc::from(key.as_str()));
                nids.insert(key, nid);
            }
        }
        Ok(nids)
    }

    pub async fn existing_state_key_nid(
        &self,
        conn: &mut impl Connect,
        key: &str,
    ) -> Result<Option<StateKeyNid>> {
        if let Some(nid) = self.state_key_nids.get(key) {
            return Ok(Some(nid));
        }
        let nid = store::state_key_nid_by_name(conn.connection().await?, key).await?;
        if let Some(nid) = nid {
            self.state_key_nids.insert(key.to_owned(), nid);
            self.state_key_names.insert(nid, Arc::from(key));
        }
        Ok(nid)
    }

    /// The NID pair of `(type, state_key)`, or `None` if either was never interned (so no state
    /// can hold it).
    pub async fn state_pair(
        &self,
        conn: &mut impl Connect,
        kind: &str,
        key: &str,
    ) -> Result<Option<(TypeNid, StateKeyNid)>> {
        let Some(type_nid) = self.existing_type_nid(conn, kind).await? else { return Ok(None) };
        let Some(key_nid) = self.existing_state_key_nid(conn, key).await? else { return Ok(None) };
        Ok(Some((type_nid, key_nid)))
    }

    pub async fn type_names(
        &self,
        conn: &mut impl Connect,
        nids: &[TypeNid],
    ) -> Result<HashMap<TypeNid, Arc<str>>> {
        let mut names = HashMap::with_capacity(nids.len());
        let mut missing = Vec::new();
        for nid in nids {
            match self.type_names.get(nid) {
                Some(name) => {
                    names.insert(*nid, name);
                }
                None => missing.push(*nid),
            }
        }
        if !missing.is_empty() {
            for (nid, name) in store::event_type_names_by_nid(conn.connection().await?, &missing).await? {
                let name: Arc<str> = Arc::from(name);
                self.type_names.insert(nid, name.clone());
                names.insert(nid, name);
            }
        }
        Ok(names)
    }

    pub async fn state_key_names(
        &self,
        conn: &mut impl Connect,
        nids: &[StateKeyNid],
    ) -> Result<HashMap<StateKeyNid, Arc<str>>> {
        let mut names = HashMap::with_capacity(nids.len());
        let mut missing = Vec::new();
        for nid in nids {
            match self.state_key_names.get(nid) {
                Some(name) => {
                    names.insert(*nid, name);
                }
                None => missing.push(*nid),
            }
        }
        if !missing.is_empty() {
            for (nid, name) in store::state_key_names_by_nid(conn.connection().await?, &missing).await? {
                let name: Arc<str> = Arc::from(name);
                self.state_key_names.insert(nid, name.clone());
                names.insert(nid, name);
            }
        }
        Ok(names)
    }

    /// Events by NID, from the cache or the database, in the order asked; unknown NIDs are
    /// skipped.
    pub async fn events(&self, conn: &mut impl Connect, nids: &[EventNid]) -> Result<Vec<StoredEvent>> {
        let mut found: HashMap<EventNid, StoredEvent> = HashMap::with_capacity(nids.len());
        let mut missing = Vec::new();
        for nid in nids {
            match self.events.get(nid) {
                Some(event) => {
                    found.insert(*nid, event);
                }
                None => missing.push(*nid),
            }
        }
        if !missing.is_empty() {
            for row in ganglion_storage::events::events_by_nid(conn.connection().await?, &missing).await? {
                let event = StoredEvent::from_row(row)?;
                self.remember_event(event.clone());
                found.insert(event.row.event_nid, event);
            }
        }
        Ok(nids.iter().filter_map(|nid| found.get(nid).cloned()).collect())
    }

    pub async fn event(&self, conn: &mut impl Connect, nid: EventNid) -> Result<Option<StoredEvent>> {
        Ok(self.events(conn, &[nid]).await?.into_iter().next())
    }

    /// An event by id (cached by NID once loaded).
    pub async fn event_by_id(&self, conn: &mut impl Connect, event_id: &str) -> Result<Option<StoredEvent>> {
        if let Some(nid) = self.event_nids.get(event_id) {
            return self.event(conn, nid).await;
        }
        match ganglion_storage::events::event_by_id(conn.connection().await?, event_id).await? {
            Some(row) => {
                let event = StoredEvent::from_row(row)?;
                self.remember_event(event.clone());
                Ok(Some(event))
            }
            None => Ok(None),
        }
    }

    /// Adds a just-persisted or just-loaded event to the cache.
    pub fn remember_event(&self, event: StoredEvent) {
        self.event_nids.insert(event.row.event_id.clone(), event.row.event_nid);
        self.events.insert(event.row.event_nid, event);
    }

    /// The state event for `(kind, key)` in `snapshot`.
    pub async fn state_event(
        &self,
        conn: &mut impl Connect,
        snapshot: &Snapshot,
        kind: &str,
        key: &str,
    ) -> Result<Option<StoredEvent>> {
        let Some((type_nid, key_nid)) = self.state_pair(conn, kind, key).await? else { return Ok(None) };
        match snapshot.get(type_nid, key_nid) {
            Some(nid) => self.event(conn, nid).await,
            None => Ok(None),
        }
    }

    /// Every state event of `snapshot`, optionally only those of `kind`.
    pub async fn state_events(
        &self,
        conn: &mut impl Connect,
        snapshot: &Snapshot,
        kind: Option<&str>,
    ) -> Result<Vec<StoredEvent>> {
        let type_filter = match kind {
            Some(kind) => match self.existing_type_nid(conn, kind).await? {
                Some(nid) => Some(nid),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        let nids: Vec<EventNid> = snapshot
            .entries()
            .filter(|entry| type_filter.is_none_or(|nid| entry.type_nid == nid))
            .map(|entry| entry.event_nid)
            .collect();
        self.events(conn, &nids).await
    }
}

#[cfg(test)]
mod tests;
