//! A materialised state snapshot: the room's `(type, state_key) -> event` map, split into hash
//! buckets whose blocks are shared with neighbouring snapshots.

use std::{collections::BTreeMap, sync::Arc};

use ganglion_storage::state::StateEntry;
use ganglion_types::{BlockNid, EventNid, SnapshotNid, StateKeyNid, TypeNid};

/// Number of hash buckets per snapshot. A change rewrites one bucket's block, so a
/// 10,000-member room rewrites about 40 entries per membership change.
pub const BUCKETS: u16 = 256;

/// The bucket of a `(type, state_key)` pair; stable across processes and versions.
pub fn bucket_of(type_nid: TypeNid, state_key_nid: StateKeyNid) -> u16 {
    let mixed = (type_nid.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (state_key_nid.0 as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    ((mixed ^ (mixed >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 56) as u16 % BUCKETS
}

/// bucket -> (its block, the block's entries sorted by `(type, state_key)`).
type Buckets = BTreeMap<u16, (BlockNid, Arc<Vec<StateEntry>>)>;

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// `None` for the empty state before a room's create event.
    pub nid: Option<SnapshotNid>,
    /// Shared: every `/sync` reading a room's state clones its snapshot from the cache.
    buckets: Arc<Buckets>,
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot::default()
    }

    pub(crate) fn from_parts(
        nid: Option<SnapshotNid>,
        parts: impl Iterator<Item = (u16, BlockNid, Arc<Vec<StateEntry>>)>,
    ) -> Snapshot {
        let buckets = parts.map(|(bucket, block, entries)| (bucket, (block, entries))).collect();
        Snapshot { nid, buckets: Arc::new(buckets) }
    }

    pub fn get(&self, type_nid: TypeNid, state_key_nid: StateKeyNid) -> Option<EventNid> {
        let (_, entries) = self.buckets.get(&bucket_of(type_nid, state_key_nid))?;
        entries
            .binary_search_by(|entry| (entry.type_nid, entry.state_key_nid).cmp(&(type_nid, state_key_nid)))
            .ok()
            .map(|index| entries[index].event_nid)
    }

    pub fn entries(&self) -> impl Iterator<Item = &StateEntry> {
        self.buckets.values().flat_map(|(_, entries)| entries.iter())
    }

    pub fn len(&self) -> usize {
        self.buckets.values().map(|(_, entries)| entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The new contents of every bucket `changes` touches (entries sorted, replacing same keys).
    pub(crate) fn apply(&self, changes: &[StateEntry]) -> BTreeMap<u16, Arc<Vec<StateEntry>>> {
        let mut touched: BTreeMap<u16, Vec<StateEntry>> = BTreeMap::new();
        for change in changes {
            let bucket = bucket_of(change.type_nid, change.state_key_nid);
            let entries = touched.entry(bucket).or_insert_with(|| {
                self.buckets.get(&bucket).map(|(_, entries)| entries.as_ref().clone()).unwrap_or_default()
            });
            let key = (change.type_nid, change.state_key_nid);
            match entries.binary_search_by(|entry| (entry.type_nid, entry.state_key_nid).cmp(&key)) {
                Ok(index) => entries[index] = *change,
                Err(index) => entries.insert(index, *change),
            }
        }
        touched.into_iter().map(|(bucket, entries)| (bucket, Arc::new(entries))).collect()
    }

    pub(crate) fn set_bucket(&mut self, bucket: u16, block: BlockNid, entries: Arc<Vec<StateEntry>>) {
        Arc::make_mut(&mut self.buckets).insert(bucket, (block, entries));
    }

    pub(crate) fn blocks(&self) -> impl Iterator<Item = (BlockNid, Arc<Vec<StateEntry>>)> + '_ {
        self.buckets.values().map(|(block, entries)| (*block, entries.clone()))
    }

    pub(crate) fn bucket_list(&self) -> Vec<(u16, BlockNid)> {
        self.buckets.iter().map(|(bucket, (block, _))| (*bucket, *block)).collect()
    }
}

#[cfg(test)]
impl Snapshot {
    pub(crate) fn buckets_for_test(&self) -> impl Iterator<Item = (u16, &Arc<Vec<StateEntry>>)> {
        self.buckets.iter().map(|(bucket, (_, entries))| (*bucket, entries))
    }
}
