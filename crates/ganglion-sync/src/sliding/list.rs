//! A user's room list for sliding sync: the rooms a list may hold, sorted by recency (bump
//! stamp), filtered. The bump stamps come from memory: a room's stamp is kept with the events
//! position it was checked at, and moved by the room's newer events in `RecentEvents` (whose
//! rows the caches hold), so a user in thousands of rooms costs no query per room; only rooms
//! memory cannot vouch for are read, together, from the database.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ganglion_events::BUMP_EVENT_TYPES;
use ganglion_storage::{Connect, LazyConn, rooms as room_store, streams as stream_store};
use ganglion_types::{RoomNid, StreamKind};
use serde_json::Value;

use super::request::ListFilters;
use crate::{
    SyncState,
    compute::{Computation, RoomMembership, SyncError},
};

/// Bump stamps remembered before the map starts over.
const MAX_ROOMS: usize = 200_000;
/// A room whose newest events memory holds no further back than this is read from the database.
const MAX_RECENT: usize = 64;

/// A room the user may see in a list, with its bump stamp.
pub(crate) struct Candidate {
    pub room: RoomMembership,
    pub bump_stamp: i64,
    /// An invite marked `is_direct`: a DM before the user's `m.direct` lists it.
    pub direct_invite: bool,
}

/// Each room's bump stamp and the events position it is known to be right at.
#[derive(Default)]
pub(crate) struct BumpStamps {
    by_room: parking_lot::Mutex<HashMap<RoomNid, (i64, i64)>>,
}

/// The rooms of the user's membership `rows` any list may hold: joined, invited and knocked rooms, and rooms the user left (or
/// was banned from) after `left_after` (so a client holding them learns of it), newest first.
pub(crate) async fn candidates(
    state: &SyncState,
    conn: &mut LazyConn,
    sync: &Computation<'_>,
    rows: &[ganglion_storage::streams::UserRoomRow],
    left_after: Option<i64>,
    up_to: i64,
) -> Result<Vec<Candidate>, SyncError> {
    let mut rooms = Vec::with_capacity(rows.len());
    let mut direct_invites = HashSet::new();
    for row in rows.iter() {
        if row.forgotten {
            continue;
        }
        let Some(room) = sync.membership_at_next(conn, row.clone()).await? else { continue };
        let keep = match room.membership.as_str() {
            "join" | "knock" => true,
            // Invites from ignored users are never shown (the Ignoring Users module).
            "invite" => match state.caches.event(conn, room.event_nid).await? {
                Some(invite) => {
                    if is_direct(&invite) {
                        direct_invites.insert(room.room_nid);
                    }
                    !sync.ignored.contains(invite.pdu.sender.as_str())
                }
                None => false,
            },
            _ => left_after.is_some_and(|after| room.stream_pos > after),
        };
        if keep {
            rooms.push(room);
        }
    }
    let joined: Vec<(RoomNid, &str)> = rooms
        .iter()
        .filter(|room| room.membership == "join")
        .map(|room| (room.room_nid, room.room_id.as_str()))
        .collect();
    let stamps = bump_stamps(state, conn, &joined, up_to).await?;
    let mut candidates: Vec<Candidate> = rooms
        .into_iter()
        .map(|room| {
            // A room the user is not in moves no further than the user's own last membership.
            let bump_stamp = match room.membership.as_str() {
                "join" => stamps.get(&room.room_nid).copied().unwrap_or(room.stream_pos),
                _ => room.stream_pos,
            };
            let direct_invite = direct_invites.contains(&room.room_nid);
            Candidate { room, bump_stamp, direct_invite }
        })
        .collect();
    candidates
        .sort_by(|a, b| b.bump_stamp.cmp(&a.bump_stamp).then_with(|| a.room.room_id.cmp(&b.room.room_id)));
    Ok(candidates)
}

/// The bump stamps of `rooms` as of at least `up_to`.
async fn bump_stamps(
    state: &SyncState,
    conn: &mut LazyConn,
    rooms: &[(RoomNid, &str)],
    up_to: i64,
) -> Result<HashMap<RoomNid, i64>, SyncError> {
    let mut stamps = HashMap::with_capacity(rooms.len());
    let mut newer: Vec<(RoomNid, i64, i64, Vec<ganglion_types::EventNid>)> = Vec::new();
    let mut missing = Vec::new();
    {
        let known = state.memory.bump_stamps.by_room.lock();
        for (room_nid, room_id) in rooms {
            let Some((stamp, checked_at)) = known.get(room_nid).copied() else {
                missing.push(*room_nid);
                continue;
            };
            match state.recent.newest_between(room_id, checked_at, up_to, MAX_RECENT) {
                Some(events) if events.is_empty() => {
                    stamps.insert(*room_nid, stamp);
                }
                Some(events) if events.len() < MAX_RECENT => newer.push((
                    *room_nid,
                    stamp,
                    checked_at,
                    events.into_iter().map(|(nid, _)| nid).collect(),
                )),
                _ => missing.push(*room_nid),
            }
        }
    }
    let mut updates = Vec::new();
    for (room_nid, stamp, _, nids) in newer {
        // Newest first: the first bump event found is the stamp.
        let events = state.caches.events(conn, &nids).await?;
        let bumped = events
            .iter()
            .find(|event| BUMP_EVENT_TYPES.contains(&event.pdu.kind.to_string().as_str()))
            .map(|event| event.row.stream_pos);
        let stamp = bumped.map_or(stamp, |bumped| bumped.max(stamp));
        stamps.insert(room_nid, stamp);
        updates.push((room_nid, stamp, up_to));
    }
    if !missing.is_empty() {
        // Read the position first: a later bump is found in `RecentEvents` next time.
        let read_at = state.positions.get(StreamKind::Events).0;
        for (room_nid, stamp) in room_store::bump_stamps_of_rooms(conn.connection().await?, &missing).await? {
            stamps.insert(room_nid, stamp);
            updates.push((room_nid, stamp, read_at));
        }
    }
    if !updates.is_empty() {
        let mut known = state.memory.bump_stamps.by_room.lock();
        if known.len() + updates.len() > MAX_ROOMS {
            known.clear();
        }
        for (room_nid, stamp, checked_at) in updates {
            let entry = known.entry(room_nid).or_insert((stamp, checked_at));
            *entry = (entry.0.max(stamp), checked_at);
        }
    }
    Ok(stamps)
}

/// What the filters of one request need to know of the user's rooms, read once per request.
#[derive(Default)]
pub(crate) struct FilterFacts {
    /// Rooms of the user's `m.direct` account data.
    direct: Option<HashSet<String>>,
    /// Room kinds: (encrypted, room type).
    kinds: HashMap<RoomNid, (bool, Option<String>)>,
    /// Children of each space a filter names.
    space_children: HashMap<String, HashSet<String>>,
}

impl FilterFacts {
    /// Whether the user's `m.direct` lists the room, or it is an invite marked `is_direct`.
    pub(crate) fn is_dm(&self, candidate: &Candidate) -> bool {
        candidate.direct_invite
            || self.direct.as_ref().is_some_and(|direct| direct.contains(&candidate.room.room_id))
    }
}

/// Whether a member event's content says `is_direct`.
fn is_direct(member: &ganglion_state::StoredEvent) -> bool {
    serde_json::from_str::<Value>(member.pdu.content.get())
        .ok()
        .and_then(|content| content.get("is_direct").and_then(Value::as_bool))
        .unwrap_or(false)
}

/// Reads what `filters` need about `candidates`.
pub(crate) async fn filter_facts(
    state: &SyncState,
    conn: &mut LazyConn,
    user_id: &str,
    filters: &[&ListFilters],
    candidates: &[Candidate],
) -> Result<FilterFacts, SyncError> {
    let mut facts =
        FilterFacts { direct: Some(direct_rooms(state, conn, user_id).await?), ..Default::default() };
    if filters.iter().any(|filters| filters.needs_room_kind()) {
        for candidate in candidates {
            let kind = room_kind(state, conn, &candidate.room).await?;
            facts.kinds.insert(candidate.room.room_nid, kind);
        }
    }
    for space in filters.iter().flat_map(|filters| filters.spaces.iter().flatten()) {
        if facts.space_children.contains_key(space) {
            continue;
        }
        let children = space_children(state, conn, space).await?;
        facts.space_children.insert(space.clone(), children);
    }
    Ok(facts)
}

/// Whether `candidate` passes `filters`.
pub(crate) fn passes(filters: &ListFilters, facts: &FilterFacts, candidate: &Candidate) -> bool {
    let room = &candidate.room;
    if let Some(is_invite) = filters.is_invite
        && is_invite != (room.membership == "invite")
    {
        return false;
    }
    if let Some(is_dm) = filters.is_dm
        && is_dm != facts.is_dm(candidate)
    {
        return false;
    }
    if let Some(spaces) = &filters.spaces
        && !spaces.iter().any(|space| {
            facts.space_children.get(space).is_some_and(|children| children.contains(&room.room_id))
        })
    {
        return false;
    }
    if filters.needs_room_kind() {
        let Some((encrypted, room_type)) = facts.kinds.get(&room.room_nid) else { return false };
        if filters.is_encrypted.is_some_and(|wanted| wanted != *encrypted) {
            return false;
        }
        if let Some(types) = &filters.room_types
            && !types.contains(room_type)
        {
            return false;
        }
        if filters.not_room_types.contains(room_type) {
            return false;
        }
    }
    true
}

/// The rooms of the user's `m.direct` account data.
async fn direct_rooms(
    state: &SyncState,
    conn: &mut LazyConn,
    user_id: &str,
) -> Result<HashSet<String>, SyncError> {
    if let Some(direct) = state.memory.direct_rooms.get(&state.recent, user_id) {
        return Ok(direct.as_ref().clone());
    }
    // Read the position first: account data published after it invalidates this entry.
    let read_at = state.positions.get(StreamKind::AccountData).0;
    let content =
        stream_store::account_data_content(conn.connection().await?, user_id, "", "m.direct").await?;
    let direct: HashSet<String> = content
        .and_then(|content| serde_json::from_str::<HashMap<String, Vec<Value>>>(&content).ok())
        .map(|by_user| {
            by_user.into_values().flatten().filter_map(|room| room.as_str().map(str::to_owned)).collect()
        })
        .unwrap_or_default();
    state.memory.direct_rooms.insert(user_id, read_at, Arc::new(direct.clone()));
    Ok(direct)
}

/// Whether a room is encrypted and its type, from the state the user sees: the current state
/// of a joined room, the state at the user's membership otherwise.
async fn room_kind(
    state: &SyncState,
    conn: &mut LazyConn,
    room: &RoomMembership,
) -> Result<(bool, Option<String>), SyncError> {
    let snapshot = match room.membership.as_str() {
        "join" => crate::timeline::state_after_position(conn, &state.caches, room.room_nid, i64::MAX).await?,
        _ => match state.caches.event(conn, room.event_nid).await? {
            Some(member) => state.caches.snapshot(conn, member.row.snapshot_nid).await?,
            None => return Ok((false, None)),
        },
    };
    let encrypted = state.caches.state_event(conn, &snapshot, "m.room.encryption", "").await?.is_some();
    let room_type = match state.caches.state_event(conn, &snapshot, "m.room.create", "").await? {
        Some(create) => serde_json::from_str::<Value>(create.pdu.content.get())
            .ok()
            .and_then(|content| content.get("type").and_then(Value::as_str).map(str::to_owned)),
        None => None,
    };
    Ok((encrypted, room_type))
}

/// The rooms a space lists as its children (`m.space.child` with a `via`).
async fn space_children(
    state: &SyncState,
    conn: &mut LazyConn,
    space_id: &str,
) -> Result<HashSet<String>, SyncError> {
    let Some(space) = room_store::room_by_id(conn.connection().await?, space_id).await? else {
        return Ok(HashSet::new());
    };
    let snapshot =
        crate::timeline::state_after_position(conn, &state.caches, space.room_nid, i64::MAX).await?;
    let mut children = HashSet::new();
    for event in state.caches.state_events(conn, &snapshot, Some("m.space.child")).await? {
        let has_via = serde_json::from_str::<Value>(event.pdu.content.get())
            .ok()
            .and_then(|content| content.get("via").and_then(Value::as_array).map(|via| !via.is_empty()))
            .unwrap_or(false);
        if has_via && let Some(child) = event.pdu.state_key.as_deref() {
            children.insert(child.to_owned());
        }
    }
    Ok(children)
}
