//! Other servers reading a room's events: one event (`/event`), the state at an event
//! (`/state`, `/state_ids`), an event's auth chain (`/event_auth`), and history before events
//! they have (`/backfill`, `/get_missing_events`).
//!
//! A server may read a room when one of its users is joined to it now, or when the room's
//! history is `world_readable`. PDUs go out as stored, redacted if they were.

use std::collections::{BinaryHeap, HashMap, HashSet};

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_events::ruma::{
    CanonicalJsonObject, EventId, RoomId, ServerName, canonical_json::redact,
    room_version_rules::RoomVersionRules,
};
use ganglion_http::{AtTimestamp, MatrixError, MatrixQuery, MatrixResult, lenient};
use ganglion_state::{Caches, StoredEvent};
use ganglion_storage::{
    DbConn, auth_chains, events::events_by_id, federation_reads::server_has_joined_member, rooms,
};
use ganglion_types::{EventNid, RoomNid};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::{FederationState, Signed};

/// Events one `/backfill` answers at most, whatever the asker's `limit`.
const MAX_BACKFILL: u64 = 100;
/// `/get_missing_events`' default and maximum `limit`, as Synapse's.
const DEFAULT_MISSING_EVENTS: i64 = 10;
const MAX_MISSING_EVENTS: i64 = 20;
/// Events a request may start a walk from: each is looked up.
const MAX_START_EVENTS: usize = 100;

/// A transaction-shaped answer (`/event`, `/backfill`).
#[derive(Serialize)]
pub(crate) struct Transaction {
    origin: String,
    origin_server_ts: i64,
    pdus: Vec<Box<RawValue>>,
}

fn transaction(state: &FederationState, pdus: Vec<Box<RawValue>>) -> Json<Transaction> {
    Json(Transaction {
        origin: state.config.server_name.clone(),
        origin_server_ts: ganglion_storage::now_ms(),
        pdus,
    })
}

/// A request's view of the database. The caches live for this request only: the process's
/// shared ones are not ours, and an event redacted meanwhile must not be served from one.
pub(crate) struct Reader {
    conn: DbConn,
    caches: Caches,
    /// Events looked up by id; `None` for ids we do not have.
    by_id: HashMap<String, Option<StoredEvent>>,
}

impl Reader {
    pub(crate) async fn new(state: &FederationState) -> MatrixResult<Reader> {
        Ok(Reader { conn: state.db.conn().await?, caches: Caches::new(), by_id: HashMap::new() })
    }

    /// Looks up those of `ids` not looked up yet.
    pub(crate) async fn load(&mut self, ids: &[String]) -> MatrixResult<()> {
        let mut missing: Vec<String> =
            ids.iter().filter(|id| !self.by_id.contains_key(*id)).cloned().collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        for row in events_by_id(&mut self.conn, &missing).await? {
            let event = StoredEvent::from_row(row)?;
            self.by_id.insert(event.row.event_id.clone(), Some(event));
        }
        for id in missing {
            self.by_id.entry(id).or_insert(None);
        }
        Ok(())
    }

    /// A looked-up event, if it is one of `room_nid`.
    pub(crate) fn get(&self, id: &str, room_nid: RoomNid) -> Option<&StoredEvent> {
        self.by_id.get(id)?.as_ref().filter(|event| event.row.room_nid == room_nid)
    }

    /// The event `id` of the room, or 404.
    pub(crate) async fn event_in_room(&mut self, id: &str, room_nid: RoomNid) -> MatrixResult<StoredEvent> {
        self.load(&[id.to_owned()]).await?;
        self.get(id, room_nid).cloned().ok_or_else(|| MatrixError::not_found(format!("Unknown event {id}")))
    }

    /// Refuses `origin` unless one of its users is joined to the room or its history is
    /// world-readable, both as of now.
    pub(crate) async fn check_access(
        &mut self,
        room: &rooms::RoomRow,
        origin: &ServerName,
    ) -> MatrixResult<()> {
        if server_has_joined_member(&mut self.conn, room.room_nid, origin.as_str()).await? {
            return Ok(());
        }
        if let Some(snapshot_nid) = room.current_snapshot_nid {
            let snapshot = self.caches.snapshot(&mut self.conn, snapshot_nid).await?;
            let visibility =
                self.caches.state_event(&mut self.conn, &snapshot, "m.room.history_visibility", "").await?;
            // Redaction keeps `history_visibility`, so the stored content answers either way.
            if visibility
                .is_some_and(|event| event.pdu.content_value()["history_visibility"] == "world_readable")
            {
                return Ok(());
            }
        }
        Err(MatrixError::forbidden(format!("{origin} may not read the events of {}", room.room_id)))
    }

    /// The state of the room before `event`: the state after it without the event itself,
    /// with the event it replaced back.
    pub(crate) async fn state_before(&mut self, event: &StoredEvent) -> MatrixResult<Vec<StoredEvent>> {
        let snapshot = self.caches.snapshot(&mut self.conn, event.row.snapshot_nid).await?;
        let nids: Vec<EventNid> = snapshot
            .entries()
            .filter_map(|entry| {
                if entry.event_nid == event.row.event_nid {
                    event.row.replaces_nid
                } else {
                    Some(entry.event_nid)
                }
            })
            .collect();
        let mut events = self.caches.events(&mut self.conn, &nids).await?;
        oldest_first(&mut events);
        for event in &events {
            self.by_id.insert(event.row.event_id.clone(), Some(event.clone()));
        }
        Ok(events)
    }

    /// The rules of the room's version.
    async fn rules(&mut self, room_nid: RoomNid) -> MatrixResult<RoomVersionRules> {
        let version = self.caches.room_version(&mut self.conn, room_nid).await?;
        version.and_then(|version| version.rules()).ok_or_else(|| {
            tracing::error!(?room_nid, "a stored room has no known version");
            MatrixError::internal("Internal server error")
        })
    }

    /// The auth chain of `events`: their auth events and those events' auth events, and so on,
    /// each once, oldest first. `events` themselves are in it only as an auth event of another.
    pub(crate) async fn auth_chain(
        &mut self,
        room_nid: RoomNid,
        events: &[StoredEvent],
    ) -> MatrixResult<Vec<StoredEvent>> {
        let rules = self.rules(room_nid).await?.authorization;
        let mut direct: Vec<String> = events
            .iter()
            .flat_map(|event| event.pdu.auth_events_with_create(&rules))
            .map(|id| id.to_string())
            .collect();
        direct.sort_unstable();
        direct.dedup();
        self.load(&direct).await?;
        // Auth events are state events, whose own chains the index holds.
        let roots: Vec<EventNid> =
            direct.iter().filter_map(|id| self.get(id, room_nid)).map(|event| event.row.event_nid).collect();
        let mut nids: HashSet<EventNid> = auth_chains::chain_of(&mut self.conn, &roots).await?;
        nids.extend(roots);
        let nids: Vec<EventNid> = nids.into_iter().collect();
        let mut chain = self.caches.events(&mut self.conn, &nids).await?;
        chain.retain(|event| event.row.room_nid == room_nid);
        oldest_first(&mut chain);
        Ok(chain)
    }

    /// The PDU as stored, or redacted per the room version if it was redacted (what
    /// other servers would have kept of it, with the original signatures and hashes).
    pub(crate) async fn pdu(&mut self, event: &StoredEvent) -> MatrixResult<Box<RawValue>> {
        let corrupt = |error: &dyn std::fmt::Display| {
            tracing::error!(event_id = %event.row.event_id, %error, "a stored event does not serialise");
            MatrixError::internal("Internal server error")
        };
        if event.row.redacted_by.is_none() {
            return RawValue::from_string(event.row.json.clone()).map_err(|error| corrupt(&error));
        }
        let rules = self.rules(event.row.room_nid).await?.redaction;
        let object: CanonicalJsonObject =
            serde_json::from_str(&event.row.json).map_err(|error| corrupt(&error))?;
        let redacted = redact(object, &rules, None).map_err(|error| corrupt(&error))?;
        let json = serde_json::to_string(&redacted).map_err(|error| corrupt(&error))?;
        RawValue::from_string(json).map_err(|error| corrupt(&error))
    }

    pub(crate) async fn pdus(&mut self, events: &[StoredEvent]) -> MatrixResult<Vec<Box<RawValue>>> {
        let mut pdus = Vec::with_capacity(events.len());
        for event in events {
            pdus.push(self.pdu(event).await?);
        }
        Ok(pdus)
    }
}

fn oldest_first(events: &mut [StoredEvent]) {
    events.sort_by_key(|event| (event.row.depth, event.row.stream_pos));
}

fn check_room_id(room_id: &str) -> MatrixResult<()> {
    RoomId::parse(room_id)
        .map(drop)
        .map_err(|_| MatrixError::invalid_param(format!("{room_id:?} is not a room id")))
}

fn check_event_id(event_id: &str) -> MatrixResult<()> {
    EventId::parse(event_id)
        .map(drop)
        .map_err(|_| MatrixError::invalid_param(format!("{event_id:?} is not an event id")))
}

/// The room `room_id` (404 if we do not have it) once `origin` may read it.
async fn readable_room(
    reader: &mut Reader,
    room_id: &str,
    origin: &ServerName,
) -> MatrixResult<rooms::RoomRow> {
    check_room_id(room_id)?;
    let room = rooms::room_by_id(&mut reader.conn, room_id)
        .await?
        .ok_or_else(|| MatrixError::not_found(format!("Unknown room {room_id}")))?;
    reader.check_access(&room, origin).await?;
    Ok(room)
}

/// `GET /_matrix/federation/v1/event/{eventId}`.
pub(crate) async fn event(
    State(state): State<FederationState>,
    Path(event_id): Path<String>,
    signed: Signed,
) -> MatrixResult<Json<Transaction>> {
    check_event_id(&event_id)?;
    let mut reader = Reader::new(&state).await?;
    reader.load(std::slice::from_ref(&event_id)).await?;
    let event = reader
        .by_id
        .get(&event_id)
        .cloned()
        .flatten()
        .ok_or_else(|| MatrixError::not_found(format!("Unknown event {event_id}")))?;
    let room = rooms::room_by_nid(&mut reader.conn, event.row.room_nid)
        .await?
        .ok_or_else(|| MatrixError::not_found(format!("Unknown event {event_id}")))?;
    reader.check_access(&room, &signed.origin).await?;
    let pdu = reader.pdu(&event).await?;
    Ok(transaction(&state, vec![pdu]))
}

#[derive(Deserialize)]
pub(crate) struct AtEvent {
    event_id: String,
}

/// The state before the event named by `query` and its auth chain.
async fn state_at(
    state: &FederationState,
    room_id: &str,
    query: MatrixResult<MatrixQuery<AtEvent>>,
    signed: &Signed,
) -> MatrixResult<(Reader, Vec<StoredEvent>, Vec<StoredEvent>)> {
    let MatrixQuery(AtEvent { event_id }) = query?;
    check_event_id(&event_id)?;
    let mut reader = Reader::new(state).await?;
    let room = readable_room(&mut reader, room_id, &signed.origin).await?;
    let event = reader.event_in_room(&event_id, room.room_nid).await?;
    let state_events = reader.state_before(&event).await?;
    let auth_chain = reader.auth_chain(room.room_nid, &state_events).await?;
    Ok((reader, state_events, auth_chain))
}

/// `GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=…&dir=f|b`: the room's event
/// nearest to `ts` in that direction, for a server that may read the room.
pub(crate) async fn timestamp_to_event(
    State(state): State<FederationState>,
    Path(room_id): Path<String>,
    query: MatrixResult<MatrixQuery<AtTimestamp>>,
    signed: Signed,
) -> MatrixResult<Json<serde_json::Value>> {
    let (ts, forward) = query?.0.parse()?;
    let mut reader = Reader::new(&state).await?;
    let room = readable_room(&mut reader, &room_id, &signed.origin).await?;
    let (event_id, origin_server_ts) =
        ganglion_storage::events::event_nearest_to_ts(&mut reader.conn, room.room_nid, ts, forward)
            .await?
            .ok_or_else(|| MatrixError::not_found("No event was found in that direction"))?;
    Ok(Json(serde_json::json!({ "event_id": event_id, "origin_server_ts": origin_server_ts })))
}

#[derive(Serialize)]
pub(crate) struct StateIds {
    pdu_ids: Vec<String>,
    auth_chain_ids: Vec<String>,
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=…`.
pub(crate) async fn state_ids(
    State(state): State<FederationState>,
    Path(room_id): Path<String>,
    query: MatrixResult<MatrixQuery<AtEvent>>,
    signed: Signed,
) -> MatrixResult<Json<StateIds>> {
    let (_, state_events, auth_chain) = state_at(&state, &room_id, query, &signed).await?;
    let ids = |events: Vec<StoredEvent>| events.into_iter().map(|event| event.row.event_id.clone()).collect();
    Ok(Json(StateIds { pdu_ids: ids(state_events), auth_chain_ids: ids(auth_chain) }))
}

#[derive(Serialize)]
pub(crate) struct RoomState {
    pdus: Vec<Box<RawValue>>,
    auth_chain: Vec<Box<RawValue>>,
}

/// `GET /_matrix/federation/v1/state/{roomId}?event_id=…`.
pub(crate) async fn room_state(
    State(state): State<FederationState>,
    Path(room_id): Path<String>,
    query: MatrixResult<MatrixQuery<AtEvent>>,
    signed: Signed,
) -> MatrixResult<Json<RoomState>> {
    let (mut reader, state_events, auth_chain) = state_at(&state, &room_id, query, &signed).await?;
    Ok(Json(RoomState {
        pdus: reader.pdus(&state_events).await?,
        auth_chain: reader.pdus(&auth_chain).await?,
    }))
}

#[derive(Serialize)]
pub(crate) struct AuthChain {
    auth_chain: Vec<Box<RawValue>>,
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`.
pub(crate) async fn event_auth(
    State(state): State<FederationState>,
    Path((room_id, event_id)): Path<(String, String)>,
    signed: Signed,
) -> MatrixResult<Json<AuthChain>> {
    check_event_id(&event_id)?;
    let mut reader = Reader::new(&state).await?;
    let room = readable_room(&mut reader, &room_id, &signed.origin).await?;
    let event = reader.event_in_room(&event_id, room.room_nid).await?;
    let chain = reader.auth_chain(room.room_nid, &[event]).await?;
    Ok(Json(AuthChain { auth_chain: reader.pdus(&chain).await? }))
}

/// One value or several: a query parameter that may repeat arrives as a string when it does not.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

#[derive(Deserialize)]
pub(crate) struct BackfillQuery {
    #[serde(deserialize_with = "one_or_many")]
    v: Vec<String>,
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    limit: Option<u64>,
}

/// A walk's queue: the deepest (newest) event first, ties by arrival.
type Frontier = BinaryHeap<(i64, i64, String)>;

fn queue(frontier: &mut Frontier, event: &StoredEvent) {
    frontier.push((event.row.depth, event.row.stream_pos, event.row.event_id.clone()));
}

/// The events of the room among `ids`, looked up; 404 if there is none.
async fn start_events(
    reader: &mut Reader,
    room_nid: RoomNid,
    ids: &[String],
) -> MatrixResult<Vec<StoredEvent>> {
    if ids.len() > MAX_START_EVENTS {
        return Err(MatrixError::invalid_param(format!("At most {MAX_START_EVENTS} events to start from")));
    }
    for id in ids {
        check_event_id(id)?;
    }
    reader.load(ids).await?;
    let events: Vec<StoredEvent> = ids.iter().filter_map(|id| reader.get(id, room_nid).cloned()).collect();
    if events.is_empty() {
        return Err(MatrixError::not_found("None of the events is known in this room"));
    }
    Ok(events)
}

/// The newest event of `frontier`.
fn pop(reader: &Reader, room_nid: RoomNid, frontier: &mut Frontier) -> Option<StoredEvent> {
    let (_, _, id) = frontier.pop()?;
    reader.get(&id, room_nid).cloned()
}

/// Queues the prev events of `event` not `seen` yet.
async fn queue_prev_events(
    reader: &mut Reader,
    room_nid: RoomNid,
    event: &StoredEvent,
    frontier: &mut Frontier,
    seen: &mut HashSet<String>,
) -> MatrixResult<()> {
    let prev: Vec<String> =
        event.pdu.prev_events.iter().map(|id| id.to_string()).filter(|id| seen.insert(id.clone())).collect();
    reader.load(&prev).await?;
    for id in &prev {
        if let Some(prev_event) = reader.get(id, room_nid) {
            queue(frontier, prev_event);
        }
    }
    Ok(())
}

/// `GET /_matrix/federation/v1/backfill/{roomId}?v=…&limit=…`: the given events and those
/// before them, newest first.
pub(crate) async fn backfill(
    State(state): State<FederationState>,
    Path(room_id): Path<String>,
    query: MatrixResult<MatrixQuery<BackfillQuery>>,
    signed: Signed,
) -> MatrixResult<Json<Transaction>> {
    let MatrixQuery(query) = query?;
    let limit = query.limit.ok_or_else(|| MatrixError::missing_param("limit is required"))?.min(MAX_BACKFILL);
    let mut reader = Reader::new(&state).await?;
    let room = readable_room(&mut reader, &room_id, &signed.origin).await?;
    let starts = start_events(&mut reader, room.room_nid, &query.v).await?;
    let mut seen: HashSet<String> = starts.iter().map(|event| event.row.event_id.clone()).collect();
    let mut frontier = Frontier::new();
    for event in &starts {
        queue(&mut frontier, event);
    }
    let mut events = Vec::new();
    while (events.len() as u64) < limit
        && let Some(event) = pop(&reader, room.room_nid, &mut frontier)
    {
        if ((events.len() + 1) as u64) < limit {
            queue_prev_events(&mut reader, room.room_nid, &event, &mut frontier, &mut seen).await?;
        }
        events.push(event);
    }
    let pdus = reader.pdus(&events).await?;
    Ok(transaction(&state, pdus))
}

#[derive(Deserialize)]
struct MissingEventsBody {
    earliest_events: Vec<String>,
    latest_events: Vec<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    min_depth: Option<i64>,
}

#[derive(Serialize)]
pub(crate) struct MissingEvents {
    events: Vec<Box<RawValue>>,
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`: the events before
/// `latest_events` back to `earliest_events` (neither included), at most `limit`, none below
/// `min_depth`, oldest first.
pub(crate) async fn get_missing_events(
    State(state): State<FederationState>,
    Path(room_id): Path<String>,
    signed: Signed,
) -> MatrixResult<Json<MissingEvents>> {
    let body: MissingEventsBody = serde_json::from_slice(&signed.body)
        .map_err(|error| MatrixError::bad_json(format!("Invalid JSON: {error}")))?;
    let limit = body.limit.unwrap_or(DEFAULT_MISSING_EVENTS).clamp(0, MAX_MISSING_EVENTS) as usize;
    let min_depth = body.min_depth.unwrap_or(0);
    let mut reader = Reader::new(&state).await?;
    let room = readable_room(&mut reader, &room_id, &signed.origin).await?;
    let latest = start_events(&mut reader, room.room_nid, &body.latest_events).await?;
    let latest_ids: HashSet<String> = latest.iter().map(|event| event.row.event_id.clone()).collect();
    let mut seen: HashSet<String> = body.earliest_events.into_iter().collect();
    seen.extend(latest_ids.iter().cloned());
    let mut frontier = Frontier::new();
    for event in &latest {
        queue(&mut frontier, event);
    }
    let mut events = Vec::new();
    while events.len() < limit
        && let Some(event) = pop(&reader, room.room_nid, &mut frontier)
    {
        // Whatever lies before an event below `min_depth` is lower still: not walked.
        if event.row.depth < min_depth {
            continue;
        }
        queue_prev_events(&mut reader, room.room_nid, &event, &mut frontier, &mut seen).await?;
        // The latest events are where the walk starts, not part of the answer.
        if !latest_ids.contains(&event.row.event_id) {
            events.push(event);
        }
    }
    oldest_first(&mut events);
    Ok(Json(MissingEvents { events: reader.pdus(&events).await? }))
}
