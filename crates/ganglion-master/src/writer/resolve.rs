//! State resolution in the writer: the state before an event that does not simply follow the
//! room's forward extremities is the resolution of the states after its `prev_events`, and the
//! room's current state is the resolution of the states after its forward extremities.
//!
//! A room whose history is a line resolves nothing: its events follow its one extremity and
//! take the current state. Resolutions are memoised by their input snapshots (a snapshot NID
//! always names the same state), in the writer once their batch commits.

use std::{collections::HashMap, sync::Arc, time::Instant};

use ganglion_events::{
    Pdu,
    ruma::{OwnedEventId, events::StateEventType, state_res::StateMap},
};
use ganglion_rpc::{MasterError, MasterResult};
use ganglion_state::{Snapshot, StoredEvent};
use ganglion_storage::{events as event_store, rooms as room_store, state::StateEntry};

use super::{Batch, RoomHead};
use crate::internal;

/// How many resolutions the writer remembers; past this it forgets them all and starts over.
const MEMO_CAPACITY: usize = 4096;

/// Memo key: the input snapshots' NIDs, sorted.
pub(crate) type MemoKey = Vec<i64>;

/// The resolved state as entries.
pub(crate) type Resolved = Arc<Vec<StateEntry>>;

pub(crate) fn remember(memo: &mut HashMap<MemoKey, Resolved>, key: MemoKey, resolved: Resolved) {
    if memo.len() >= MEMO_CAPACITY {
        memo.clear();
    }
    memo.insert(key, resolved);
}

impl Batch<'_> {
    /// The room's state after `event` in the event graph: its own record when it came on a fork,
    /// else its row's snapshot.
    pub(crate) async fn state_after(&mut self, event: &StoredEvent) -> MasterResult<Snapshot> {
        let recorded = event_store::state_after_nid(self.connection().await?, event.row.event_nid)
            .await
            .map_err(internal)?;
        let caches = self.svc.caches.clone();
        caches.snapshot(self.tx(), recorded.unwrap_or(event.row.snapshot_nid)).await.map_err(internal)
    }

    /// The resolution of `states` (of the room of `head`), written as a snapshot.
    pub(crate) async fn resolve(&mut self, head: &RoomHead, states: Vec<Snapshot>) -> MasterResult<Snapshot> {
        let mut unique: Vec<Snapshot> = Vec::with_capacity(states.len());
        for state in states {
            if !unique.iter().any(|known| known.nid == state.nid) {
                unique.push(state);
            }
        }
        let Some(base) = unique.first().cloned() else {
            return Err(MasterError::internal("state resolution of no states"));
        };
        if unique.len() == 1 {
            return Ok(base);
        }
        let mut key: MemoKey = unique.iter().map(|state| state.nid.map_or(0, |nid| nid.0)).collect();
        key.sort_unstable();
        let memoised = self
            .resolved
            .iter()
            .find(|(known, _)| *known == key)
            .map(|(_, resolved)| resolved.clone())
            .or_else(|| self.writer.resolved.get(&key).cloned());
        let resolved = match memoised {
            Some(resolved) => resolved,
            None => {
                let resolved = Arc::new(self.compute_resolution(head, &unique).await?);
                self.resolved.push((key, resolved.clone()));
                resolved
            }
        };
        let changes: Vec<StateEntry> = resolved
            .iter()
            .filter(|entry| base.get(entry.type_nid, entry.state_key_nid) != Some(entry.event_nid))
            .copied()
            .collect();
        if changes.is_empty() {
            return Ok(base);
        }
        let caches = self.svc.caches.clone();
        caches.write_snapshot(self.tx(), head.room_nid, &base, &changes).await.map_err(internal)
    }

    /// Loads the states' events and their auth chains, and resolves on a blocking thread.
    async fn compute_resolution(
        &mut self,
        head: &RoomHead,
        states: &[Snapshot],
    ) -> MasterResult<Vec<StateEntry>> {
        let caches = self.svc.caches.clone();
        let mut events: HashMap<OwnedEventId, Arc<Pdu>> = HashMap::new();
        let mut entry_of: HashMap<OwnedEventId, StateEntry> = HashMap::new();
        let mut maps: Vec<StateMap<OwnedEventId>> = Vec::with_capacity(states.len());
        for state in states {
            let nids: Vec<_> = state.entries().map(|entry| entry.event_nid).collect();
            let loaded = caches.events(self.tx(), &nids).await.map_err(internal)?;
            let mut map = StateMap::with_capacity(loaded.len());
            for event in loaded {
                let (Some(state_key), Some(state_key_nid)) = (&event.pdu.state_key, event.row.state_key_nid)
                else {
                    continue;
                };
                let id = event.pdu.event_id.clone();
                map.insert((StateEventType::from(event.pdu.kind.to_string()), state_key.clone()), id.clone());
                entry_of.insert(
                    id.clone(),
                    StateEntry {
                        type_nid: event.row.type_nid,
                        state_key_nid,
                        event_nid: event.row.event_nid,
                    },
                );
                events.insert(id, event.pdu.clone());
            }
            maps.push(map);
        }
        // Auth chains: every ancestor through `auth_events` that this server has.
        let mut wanted: Vec<OwnedEventId> =
            events.values().flat_map(|event| event.auth_events.iter().cloned()).collect();
        while let Some(id) = wanted.pop() {
            if events.contains_key(&id) {
                continue;
            }
            if let Some(event) = self.event_by_id(id.as_str()).await? {
                wanted
                    .extend(event.pdu.auth_events.iter().filter(|auth| !events.contains_key(*auth)).cloned());
                events.insert(id, event.pdu.clone());
            }
        }
        let rules = head.rules.clone();
        let started = Instant::now();
        let resolved =
            tokio::task::spawn_blocking(move || ganglion_events::resolve_state(&rules, &maps, &events))
                .await
                .map_err(|error| MasterError::internal(format!("state resolution panicked: {error}")))?
                .map_err(internal)?;
        if let Some(metrics) = self.svc.metrics.get() {
            metrics.resolved(started.elapsed());
        }
        tracing::debug!(states = states.len(), took = ?started.elapsed(), "resolved a room's state");
        Ok(resolved.values().filter_map(|id| entry_of.get(id).copied()).collect())
    }

    /// Memberships (and the room's remote members) as `after` has them where it differs from
    /// `before`: a resolution may change several at once. `position` is the event that caused it.
    pub(crate) async fn apply_membership_changes(
        &mut self,
        head: &mut RoomHead,
        before: &Snapshot,
        after: &Snapshot,
        position: i64,
    ) -> MasterResult<()> {
        let caches = self.svc.caches.clone();
        let Some(member_type) =
            caches.existing_type_nid(self.tx(), "m.room.member").await.map_err(internal)?
        else {
            return Ok(());
        };
        let changed: Vec<_> = after
            .entries()
            .filter(|entry| entry.type_nid == member_type)
            .filter(|entry| before.get(entry.type_nid, entry.state_key_nid) != Some(entry.event_nid))
            .map(|entry| entry.event_nid)
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let own_server = self.svc.config.server_name.clone();
        for event in caches.events(self.tx(), &changed).await.map_err(internal)? {
            let Some(target) = event.pdu.state_key.clone() else { continue };
            let membership = event
                .pdu
                .content_value()
                .get("membership")
                .and_then(|m| m.as_str())
                .unwrap_or("leave")
                .to_owned();
            if let Ok(user) = ganglion_events::ruma::OwnedUserId::try_from(target.as_str())
                && user.server_name().as_str() != own_server
            {
                let joined = Arc::make_mut(&mut head.remote_joined);
                if membership == "join" {
                    joined.insert(user);
                } else {
                    joined.remove(&user);
                }
            }
            let conn = self.connection().await?;
            room_store::upsert_membership(
                conn,
                head.room_nid,
                &target,
                &membership,
                event.row.event_nid,
                position,
            )
            .await
            .map_err(internal)?;
        }
        Ok(())
    }
}
