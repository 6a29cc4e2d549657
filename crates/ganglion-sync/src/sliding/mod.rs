//! Simplified sliding sync (MSC4186), the sync Element X uses:
//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`. A request names lists
//! (index ranges into the user's rooms sorted by recency, with filters), room subscriptions and
//! extensions; the response carries the rooms in those ranges that the connection's client does
//! not have yet or that changed, and each list's count. When nothing changed since `pos`, the
//! request waits (up to `timeout`) for a row of the user or one of their rooms, like `/sync`.
//!
//! Built on the sync role's memory: the room list comes from the cached memberships and bump
//! stamps, unchanged rooms are told apart by `RecentEvents`, and only rooms that go out are read.

mod connections;
mod extensions;
mod list;
mod request;
mod room;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use axum::extract::State;
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixQuery, MatrixResult, lenient};
use ganglion_types::ErrorClass;
use http::{HeaderValue, header::CONTENT_TYPE};
use serde::Deserialize;
use tokio::time::Instant;

pub(crate) use connections::Connections;
use connections::{ConnectionState, RoomSent};
pub(crate) use list::BumpStamps;
use request::{RoomConfig, SlidingRequest};

use crate::{
    SyncState,
    body::ObjectWriter,
    compute::{self, Computation, SyncRequest},
    filter::Filter,
    unread,
};

#[derive(Deserialize)]
pub(crate) struct SlidingQuery {
    pos: Option<String>,
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    timeout: Option<u64>,
    set_presence: Option<String>,
}

/// `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`.
pub(crate) async fn sliding_sync(
    State(state): State<SyncState>,
    Auth(session): Auth,
    MatrixQuery(query): MatrixQuery<SlidingQuery>,
    MatrixJson(body): MatrixJson<SlidingRequest>,
) -> MatrixResult<([(http::HeaderName, HeaderValue); 2], Vec<u8>)> {
    body.check()?;
    let user_id = session.user_id.as_str();
    let device_id = session.device_id.as_str();
    let key = (user_id.to_owned(), device_id.to_owned(), body.conn_id.clone().unwrap_or_default());
    let pos = query.pos.as_deref().filter(|pos| !pos.is_empty());
    let previous = state.memory.sliding.state_at(&key, pos).map_err(|_| {
        MatrixError::new(ErrorClass::UnknownPos, "Unknown position: start the connection again without `pos`")
    })?;
    let presence = crate::handler::presence_of(query.set_presence.as_deref())?;
    let _syncing = state.syncing.sync_started(&session.user_id, &session.device_id, presence).await;
    // A new connection is answered at once, whatever it asks.
    let timeout = match pos {
        Some(_) => Duration::from_millis(query.timeout.unwrap_or(0)).min(crate::handler::MAX_TIMEOUT),
        None => Duration::ZERO,
    };
    let deadline = Instant::now() + timeout;
    let (answer, next_state) = loop {
        let current = state.positions.current();
        let next = compute::next_token(current, previous.token.as_ref());
        let (answer, next_state, listen) =
            compute_answer(&state, (user_id, device_id), &body, &previous, next).await?;
        if timeout.is_zero() || !answer.is_empty(&previous) || Instant::now() >= deadline {
            break (answer, next_state);
        }
        let mut keys = listen;
        keys.push(Arc::from(user_id));
        let listener = state.notifier.listen(keys);
        // A row published after `current` was read found no listener: compute again at once.
        if state.positions.current() == current {
            let _ = tokio::time::timeout_at(deadline, listener.notified()).await;
        }
    };
    let new_pos = state.memory.sliding.store(key, pos, next_state);
    state.memory.stats.count(answer.from_database);
    let source = if answer.from_database { "database" } else { "memory" };
    let now_ms = u64::try_from(ganglion_storage::now_ms()).unwrap_or(0);
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (http::HeaderName::from_static(crate::handler::SYNC_SOURCE), HeaderValue::from_static(source)),
        ],
        answer.into_body(&new_pos, body.txn_id.as_deref(), now_ms),
    ))
}

/// A computed answer.
struct Answer {
    list_counts: BTreeMap<String, usize>,
    rooms: Vec<room::RoomOut>,
    extensions: extensions::ExtensionsOut,
    /// Whether computing it queried the database (else it came from memory alone).
    from_database: bool,
}

impl Answer {
    /// Whether it tells the client nothing it does not know.
    fn is_empty(&self, previous: &ConnectionState) -> bool {
        self.rooms.is_empty() && self.extensions.is_empty() && self.list_counts == previous.list_counts
    }

    fn into_body(self, pos: &str, txn_id: Option<&str>, now_ms: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        let mut body = ObjectWriter::open(&mut out);
        body.member("pos", pos);
        if let Some(txn_id) = txn_id {
            body.member("txn_id", txn_id);
        }
        body.object("lists", |lists| {
            for (name, count) in &self.list_counts {
                lists.object(name, |list| list.member("count", count));
            }
        });
        body.object("rooms", |rooms| {
            for room in &self.rooms {
                rooms.object(&room.room_id, |section| room.write(section, now_ms));
            }
        });
        body.object("extensions", |extensions| self.extensions.write(extensions));
        body.close();
        out
    }
}

/// The answer between the connection's `previous` state and `next`, the connection's state
/// after it, and the rooms whose rows may change the next answer.
async fn compute_answer(
    state: &SyncState,
    (user_id, device_id): (&str, &str),
    body: &SlidingRequest,
    previous: &ConnectionState,
    next: ganglion_types::SyncToken,
) -> Result<(Answer, ConnectionState, Vec<Arc<str>>), MatrixError> {
    let mut conn = state.db.lazy();
    let filter = Filter::default();
    let request =
        SyncRequest { user_id, device_id, since: previous.token, full_state: false, filter: &filter };
    let mut sync = Computation::new(state, &request, next);
    sync.ignored = compute::ignored_users(state, &mut conn, user_id).await?;
    // What the client holds was chosen under its old ignore list: every room goes out whole
    // again (as `/sync` marks them `limited`), without the newly ignored users' events.
    let held = match &previous.ignored {
        Some(ignored) if **ignored != *sync.ignored => Default::default(),
        _ => previous.rooms.clone(),
    };
    let left_after = previous.token.map(|token| token.events.0);
    let all_rooms = compute::user_rooms(state, &mut conn, user_id).await?;
    let candidates = list::candidates(state, &mut conn, &sync, &all_rooms, left_after, next.events.0).await?;
    let filters: Vec<&request::ListFilters> =
        body.lists.values().filter_map(|list| list.filters.as_ref()).collect();
    let facts = list::filter_facts(state, &mut conn, user_id, &filters, &candidates).await?;

    // Each list's rooms in its ranges, and every room's merged config and lists.
    let mut list_counts = BTreeMap::new();
    // Configs are shared between a list's rooms: a room in one list costs no copy of it.
    let mut wanted: BTreeMap<usize, (Arc<RoomConfig>, BTreeSet<&str>, bool)> = BTreeMap::new();
    for (name, list) in &body.lists {
        let config = Arc::new(list.room.normalized());
        let members: Vec<usize> = (0..candidates.len())
            .filter(|index| {
                list.filters.as_ref().is_none_or(|filters| list::passes(filters, &facts, &candidates[*index]))
            })
            .collect();
        list_counts.insert(name.clone(), members.len());
        for (start, end) in &list.ranges {
            let end = (*end).min(members.len().saturating_sub(1) as u64) as usize;
            for index in members.iter().take(end + 1).skip(*start as usize) {
                let entry = wanted.entry(*index).or_insert_with(|| (config.clone(), BTreeSet::new(), false));
                if !Arc::ptr_eq(&entry.0, &config) {
                    Arc::make_mut(&mut entry.0).merge(&config);
                }
                entry.1.insert(name.as_str());
            }
        }
    }
    let by_id: HashMap<&str, usize> = candidates
        .iter()
        .enumerate()
        .map(|(index, candidate)| (candidate.room.room_id.as_str(), index))
        .collect();
    for (room_id, config) in &body.room_subscriptions {
        // A room the user has no membership in (or may not see) is left out.
        let Some(index) = by_id.get(room_id.as_str()) else { continue };
        let config = Arc::new(config.normalized());
        let entry = wanted.entry(*index).or_insert_with(|| (config.clone(), BTreeSet::new(), true));
        if !Arc::ptr_eq(&entry.0, &config) {
            Arc::make_mut(&mut entry.0).merge(&config);
        }
        entry.2 = true;
    }

    let cx = room::RoomContext {
        state,
        sync: &sync,
        user_id,
        device_id,
        next,
        live_after: previous.token.map(|token| token.events.0),
        covered_at: Arc::new(next),
        unknown_types: Default::default(),
    };
    let mut next_state = ConnectionState {
        token: Some(next),
        rooms: held.clone(),
        ignored: Some(sync.ignored.clone()),
        list_counts: list_counts.clone(),
    };
    let mut rooms = Vec::new();
    let mut scoped_meta = Vec::new();
    for (index, (config, lists, subscribed)) in &wanted {
        let candidate = &candidates[*index];
        let room_id: Arc<str> = Arc::from(candidate.room.room_id.as_str());
        let sent: Option<&RoomSent> = held.get(&room_id);
        let is_dm = facts.is_dm(candidate);
        let (out, now_sent) = room::room(&cx, &mut conn, candidate, config, sent, is_dm).await?;
        next_state.rooms.insert(room_id, now_sent);
        let initial = out.as_ref().is_some_and(|out| out.initial);
        let covered_before = match (initial, sent) {
            (false, Some(sent)) => Some(sent.covered_at.clone()),
            _ => None,
        };
        scoped_meta.push((*index, lists.clone(), *subscribed, covered_before, rooms.len(), out.is_some()));
        if let Some(out) = out {
            rooms.push(out);
        }
    }
    // Counts move with new events and with the user's receipts: when either may have, every
    // joined room in range is counted (one query) and goes out where its counts moved.
    let receipts_moved = previous.token.is_none_or(|token| token.receipts < next.receipts);
    if receipts_moved || !rooms.is_empty() {
        let joined: Vec<&list::Candidate> = wanted
            .keys()
            .map(|index| &candidates[*index])
            .filter(|candidate| candidate.room.membership == "join")
            .collect();
        let ids: Vec<_> = joined
            .iter()
            .map(|candidate| (candidate.room.room_nid, candidate.room.room_id.as_str()))
            .collect();
        let mut unread = unread::unread_counts(state, &mut conn, user_id, &ids, &next).await?;
        for candidate in joined {
            let room_id = candidate.room.room_id.as_str();
            let counts = unread.remove(room_id).map_or((0, 0), |unread| unread.total());
            let before = next_state.rooms.get(room_id).map(|sent| sent.unread);
            if let Some(out) = rooms.iter_mut().find(|out| out.room_id == room_id) {
                out.unread = Some(counts);
            } else if before != Some(counts) {
                let is_dm = facts.is_dm(candidate);
                rooms.push(room::RoomOut::counts_only(
                    room_id.to_owned(),
                    is_dm,
                    candidate.bump_stamp,
                    counts,
                ));
            }
            if let Some(sent) = next_state.rooms.get_mut(room_id) {
                sent.unread = counts;
            }
        }
    }
    let scoped: Vec<extensions::ScopedRoom<'_>> = scoped_meta
        .iter()
        .map(|(index, lists, subscribed, covered_before, out_index, has_out)| extensions::ScopedRoom {
            room_id: candidates[*index].room.room_id.as_str(),
            lists: lists.clone(),
            subscribed: *subscribed,
            initial: covered_before.is_none(),
            covered_before: covered_before.as_deref(),
            timeline_event_ids: match has_out {
                true => &rooms[*out_index].timeline_event_ids,
                false => &[],
            },
        })
        .collect();
    let ext_cx = extensions::ExtensionContext {
        state,
        user_id,
        device_id,
        since: previous.token.as_ref(),
        next,
        all_rooms: all_rooms.as_slice(),
        ignored: &sync.ignored,
    };
    let extensions = extensions::extensions(&ext_cx, &mut conn, &body.extensions, &scoped).await?;
    drop(scoped);
    let listen = candidates
        .iter()
        .filter(|candidate| candidate.room.membership == "join")
        .map(|candidate| Arc::from(candidate.room.room_id.as_str()))
        .collect();
    Ok((Answer { list_counts, rooms, extensions, from_database: conn.used() }, next_state, listen))
}
