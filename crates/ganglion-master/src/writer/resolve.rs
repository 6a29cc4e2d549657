//! State resolution in the writer: the state before an event that does not simply follow the
//! room's forward extremities is the resolution of the states after its `prev_events`, and the
//! room's current state is the resolution of the states after its forward extremities.
//!
//! A room whose history is a line resolves nothing: its events follow its one extremity and
//! take the current state. Resolutions are memoised by their input snapshots (a snapshot NID
//! always names the same state), in the writer once their batch commits.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Instant,
};

use ganglion_events::ruma::room_version_rules::RoomVersionRules;
use ganglion_events::{
    Pdu,
    ruma::{OwnedEventId, events::StateEventType, state_res::StateMap},
};
use ganglion_rpc::{MasterError, MasterResult};
use ganglion_state::{Snapshot, StoredEvent};
use ganglion_storage::{auth_chains, events as event_store, rooms as room_store, state::StateEntry};
use ganglion_types::{EventNid, RoomNid};

use super::{Batch, RoomHead};
use crate::internal;

/// How many resolutions the writer remembers; past this it forgets them all and starts over.
const MEMO_CAPACITY: usize = 4096;

/// Memo key: the input snapshots' NIDs, sorted.
pub(crate) type MemoKey = Vec<i64>;

/// The resolved state, as the snapshot written for it: the same inputs later take it as it is,
/// without resolving or writing anything.
pub(crate) type Resolved = Snapshot;

/// The index entry of a state event (no other kind has one).
pub(crate) fn unindexed(head: &RoomHead, event_nid: EventNid, pdu: &Pdu) -> Option<auth_chains::Unindexed> {
    pdu.state_key.as_ref()?;
    Some(index_entry(&head.rules, head.room_nid, event_nid, pdu))
}

fn index_entry(
    rules: &RoomVersionRules,
    room_nid: RoomNid,
    event_nid: EventNid,
    pdu: &Pdu,
) -> auth_chains::Unindexed {
    let auth_events =
        pdu.auth_events_with_create(&rules.authorization).iter().map(ToString::to_string).collect();
    auth_chains::Unindexed { event_nid, room_nid, auth_events }
}

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

    /// Takes the states before prev events this server does not have, as their events' origin
    /// told them, for the events of this batch.
    pub(crate) fn set_gaps(&mut self, gaps: Vec<ganglion_rpc::GapState>) {
        self.gaps = gaps.into_iter().map(|gap| (gap.event_id, gap.state_before)).collect();
    }

    /// The state after `prev`, an event at a gap: `state_before` (those of its events this
    /// server has, kept as outliers) with `prev` applied, written as a snapshot. `None` when
    /// not even the room's create event is among them.
    pub(crate) async fn state_after_gap(
        &mut self,
        head: &RoomHead,
        prev: &OwnedEventId,
        state_before: &[OwnedEventId],
    ) -> MasterResult<Option<Snapshot>> {
        let ids: Vec<String> =
            state_before.iter().chain(std::iter::once(prev)).map(ToString::to_string).collect();
        let rows = event_store::events_by_id(self.connection().await?, &ids).await.map_err(internal)?;
        let mut state: HashMap<(ganglion_types::TypeNid, ganglion_types::StateKeyNid), EventNid> =
            HashMap::new();
        let create_type =
            self.svc.caches.clone().type_nid(self.tx(), "m.room.create").await.map_err(internal)?;
        // The prev event last: the state after it is the state before it with it applied.
        let (before, after): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .filter(|row| row.room_nid == head.room_nid)
            .partition(|row| row.event_id != prev.as_str());
        for row in before.into_iter().chain(after) {
            if let Some(state_key_nid) = row.state_key_nid {
                state.insert((row.type_nid, state_key_nid), row.event_nid);
            }
        }
        if !state.keys().any(|(type_nid, _)| *type_nid == create_type) {
            tracing::info!(%prev, "the state at a gap has no create event: left out");
            return Ok(None);
        }
        let entries: Vec<StateEntry> = state
            .into_iter()
            .map(|((type_nid, state_key_nid), event_nid)| StateEntry { type_nid, state_key_nid, event_nid })
            .collect();
        let caches = self.svc.caches.clone();
        caches
            .write_snapshot(self.tx(), head.room_nid, &Snapshot::empty(), &entries)
            .await
            .map(Some)
            .map_err(internal)
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
        if let Some(snapshot) = memoised {
            return Ok(snapshot);
        }
        let resolved = self.compute_resolution(head, &unique).await?;
        let changes: Vec<StateEntry> = resolved
            .iter()
            .filter(|entry| base.get(entry.type_nid, entry.state_key_nid) != Some(entry.event_nid))
            .copied()
            .collect();
        let snapshot = if changes.is_empty() {
            base
        } else {
            let caches = self.svc.caches.clone();
            caches.write_snapshot(self.tx(), head.room_nid, &base, &changes).await.map_err(internal)?
        };
        // Kept with the batch: a snapshot of a batch that fails is never taken again.
        self.resolved.push((key, snapshot.clone()));
        Ok(snapshot)
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
        let placing = self.placing.clone();
        for state in states {
            let nids: Vec<_> = state.entries().map(|entry| entry.event_nid).collect();
            let loaded = caches.events(self.tx(), &nids).await.map_err(internal)?;
            let mut found: Vec<(StateEntry, Arc<Pdu>)> = loaded
                .into_iter()
                .filter_map(|event| {
                    let entry = StateEntry {
                        type_nid: event.row.type_nid,
                        state_key_nid: event.row.state_key_nid?,
                        event_nid: event.row.event_nid,
                    };
                    Some((entry, event.pdu))
                })
                .collect();
            // The event being placed on a fork has no row yet.
            if let Some(placed) = placing.as_ref().filter(|(entry, _)| nids.contains(&entry.event_nid)) {
                found.push(placed.clone());
            }
            let mut map = StateMap::with_capacity(found.len());
            for (entry, pdu) in found {
                let Some(state_key) = &pdu.state_key else { continue };
                let id = pdu.event_id.clone();
                map.insert((StateEventType::from(pdu.kind.to_string()), state_key.clone()), id.clone());
                entry_of.insert(id.clone(), entry);
                events.insert(id, pdu);
            }
            maps.push(map);
        }
        // Each state's auth chain from the index, in one query for them all.
        let mut state_nids: Vec<EventNid> = entry_of.values().map(|entry| entry.event_nid).collect();
        state_nids.sort_unstable();
        self.tx().index_auth_chains().await.map_err(internal)?;
        let rows = auth_chains::chain_rows(self.connection().await?, &state_nids).await.map_err(internal)?;
        let mut chain_of: HashMap<EventNid, Vec<EventNid>> = HashMap::new();
        for (event, ancestor) in &rows {
            chain_of.entry(*event).or_default().push(*ancestor);
        }
        // The placed event's chain: its auth events and theirs.
        let mut rows = rows;
        if let Some((entry, pdu)) = placing.filter(|(entry, _)| state_nids.contains(&entry.event_nid)) {
            let ids: Vec<String> = pdu
                .auth_events_with_create(&head.rules.authorization)
                .iter()
                .map(ToString::to_string)
                .collect();
            let conn = self.connection().await?;
            let auth: Vec<EventNid> = event_store::events_by_id(conn, &ids)
                .await
                .map_err(internal)?
                .into_iter()
                .filter(|row| row.room_nid == head.room_nid)
                .map(|row| row.event_nid)
                .collect();
            let conn = self.connection().await?;
            let mut chain = auth_chains::chain_of(conn, &auth).await.map_err(internal)?;
            chain.extend(auth);
            rows.extend(chain.iter().map(|ancestor| (entry.event_nid, *ancestor)));
            chain_of.insert(entry.event_nid, chain.into_iter().collect());
        }
        let mut id_of: HashMap<EventNid, OwnedEventId> =
            entry_of.iter().map(|(id, entry)| (entry.event_nid, id.clone())).collect();
        let mut ancestors: Vec<EventNid> =
            rows.iter().map(|(_, ancestor)| *ancestor).filter(|nid| !id_of.contains_key(nid)).collect();
        ancestors.sort_unstable();
        ancestors.dedup();
        for event in caches.events(self.tx(), &ancestors).await.map_err(internal)? {
            id_of.insert(event.row.event_nid, event.pdu.event_id.clone());
            events.insert(event.pdu.event_id.clone(), event.pdu.clone());
        }
        let chains: Vec<HashSet<OwnedEventId>> = maps
            .iter()
            .map(|map| {
                map.values()
                    .filter_map(|id| entry_of.get(id))
                    .filter_map(|entry| chain_of.get(&entry.event_nid))
                    .flatten()
                    .filter_map(|ancestor| id_of.get(ancestor).cloned())
                    .collect()
            })
            .collect();
        let rules = head.rules.clone();
        let started = Instant::now();
        let resolved = tokio::task::spawn_blocking(move || {
            ganglion_events::resolve_state(&rules, &maps, chains, &events)
        })
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
            let membership = event.pdu.membership();
            if let Ok(user) = ganglion_events::ruma::OwnedUserId::try_from(target.as_str()) {
                head.set_membership(user, &membership, &own_server);
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

/// Indexes the auth chains of rooms whose events were written before the index existed, a room
/// per transaction, before the writer takes any event.
pub(crate) async fn index_backlog(db: &ganglion_storage::Db) -> MasterResult<()> {
    let mut conn = db.conn().await.map_err(internal)?;
    let rooms = auth_chains::backlog(&mut conn).await.map_err(internal)?;
    drop(conn);
    for room_nid in rooms {
        let mut tx = db.begin().await.map_err(internal)?;
        let rules = room_store::room_by_nid(&mut tx, room_nid)
            .await
            .map_err(internal)?
            .and_then(|room| ganglion_events::ruma::RoomVersionId::try_from(room.room_version.as_str()).ok())
            .and_then(|version| version.rules());
        let mut unindexed = Vec::new();
        if let Some(rules) = rules {
            for (event_nid, event_id, json) in
                auth_chains::state_events_of_room(&mut tx, room_nid).await.map_err(internal)?
            {
                let Ok(event_id) = OwnedEventId::try_from(event_id) else { continue };
                let Ok(pdu) = Pdu::from_json(event_id, Arc::from(json)) else { continue };
                unindexed.push(index_entry(&rules, room_nid, event_nid, &pdu));
            }
        }
        let count = unindexed.len();
        auth_chains::index(&mut tx, &unindexed).await.map_err(internal)?;
        auth_chains::clear_backlog(&mut tx, room_nid).await.map_err(internal)?;
        tx.commit().await.map_err(|e| internal(ganglion_storage::StorageError::from(e)))?;
        tracing::info!(?room_nid, state_events = count, "indexed the auth chains of a room");
    }
    Ok(())
}
