//! State resolution: v2 for room versions 2 to 11, v2.1 (the conflicted state subgraph, the
//! iterative checks starting empty) for room version 12, through ruma's implementation, over
//! events the caller has loaded.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    EventId, OwnedEventId,
    room_version_rules::RoomVersionRules,
    state_res::{self, StateMap, utils::event_id_set::EventIdSet},
};

use crate::Pdu;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("the room version has no state resolution v2")]
    UnsupportedVersion,
    #[error("state resolution failed: {0}")]
    Failed(String),
}

/// The resolution of `states`, given each one's auth chain (the union of its events' chains, as
/// [`auth_chain`] walks them or an index holds them). `events` holds every event the states and
/// chains name (an event missing there is left out, as an unknown one would be).
/// Pure CPU: call it off the async runtime.
pub fn resolve_state(
    rules: &RoomVersionRules,
    states: &[StateMap<OwnedEventId>],
    auth_chains: Vec<HashSet<OwnedEventId>>,
    events: &HashMap<OwnedEventId, Arc<Pdu>>,
) -> Result<StateMap<OwnedEventId>, ResolveError> {
    let v2 = rules.state_res.v2_rules().ok_or(ResolveError::UnsupportedVersion)?;
    let auth_chains: Vec<EventIdSet<OwnedEventId>> =
        auth_chains.into_iter().map(|chain| chain.into_iter().collect()).collect();
    state_res::resolve(
        &rules.authorization,
        v2,
        states.iter(),
        auth_chains,
        |id: &EventId| events.get(id).cloned(),
        |conflicted: &StateMap<Vec<OwnedEventId>>| {
            Some(conflicted_subgraph(conflicted.values().flatten(), events).into_iter().collect())
        },
    )
    .map_err(|error| ResolveError::Failed(error.to_string()))
}

/// Every event reachable from `ids` through `auth_events` (not `ids` themselves, unless one is
/// an auth event of another), walked once however many of them share ancestors.
pub fn auth_chain<'a>(
    ids: impl IntoIterator<Item = &'a OwnedEventId>,
    events: &HashMap<OwnedEventId, Arc<Pdu>>,
) -> HashSet<OwnedEventId> {
    let mut chain: HashSet<OwnedEventId> = HashSet::new();
    let mut stack: Vec<&OwnedEventId> = ids.into_iter().collect();
    while let Some(id) = stack.pop() {
        let Some(event) = events.get(id) else { continue };
        for auth in &event.auth_events {
            if chain.insert(auth.clone()) {
                stack.push(auth);
            }
        }
    }
    chain
}

/// The conflicted state subgraph (room version 12): every event on an `auth_events` path from
/// one conflicted event to another, the ends included.
fn conflicted_subgraph<'a>(
    conflicted: impl Iterator<Item = &'a OwnedEventId>,
    events: &HashMap<OwnedEventId, Arc<Pdu>>,
) -> HashSet<OwnedEventId> {
    let conflicted: HashSet<&OwnedEventId> = conflicted.collect();
    // Whether an event leads to a conflicted one, worked out children first without recursion
    // (membership chains can be thousands of events deep).
    let mut leads: HashMap<&OwnedEventId, bool> = HashMap::new();
    let mut stack: Vec<(&OwnedEventId, bool)> = conflicted.iter().map(|id| (*id, false)).collect();
    while let Some((id, expanded)) = stack.pop() {
        let Some(event) = events.get(id) else {
            leads.insert(id, false);
            continue;
        };
        if expanded {
            let reaches = event
                .auth_events
                .iter()
                .any(|auth| conflicted.contains(auth) || leads.get(auth) == Some(&true));
            leads.insert(id, reaches);
        } else if !leads.contains_key(id) {
            stack.push((id, true));
            stack.extend(
                event.auth_events.iter().filter(|auth| !leads.contains_key(auth)).map(|auth| (auth, false)),
            );
        }
    }
    let mut subgraph: HashSet<OwnedEventId> = conflicted.iter().map(|id| (*id).clone()).collect();
    // The ancestors of conflicted events that lead to one are on such a path.
    subgraph.extend(
        auth_chain(conflicted.iter().copied(), events).into_iter().filter(|id| leads.get(id) == Some(&true)),
    );
    subgraph
}

impl ganglion_types::HasErrorClass for ResolveError {
    fn class(&self) -> ganglion_types::ErrorClass {
        ganglion_types::ErrorClass::Internal
    }
}
