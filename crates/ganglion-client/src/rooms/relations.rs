//! Events around other events: `/relations` (an event's children by relation type and event
//! type, paged either way, optionally through relations of relations), `/threads` (a room's
//! threads, newest activity first) and `/context` (an event with the events either side).
//!
//! Each reads only what `/messages` would show the user: history visibility, their ignore list,
//! and nothing past a former member's leave.

use std::collections::{BTreeSet, HashSet};

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_http::{Auth, MatrixError, MatrixQuery, MatrixResult, Session, lenient};
use ganglion_state::StoredEvent;
use ganglion_storage::{Conn, events as event_store, relations as relation_store};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    access::{self, HISTORY_FLOOR, ReadableRoom},
    filter::{self, RoomEventFilter},
    messages::{Direction, PageReader, Viewer, ignored_users, page_range},
};
use crate::ClientState;

/// Events a page may hold at most.
const MAX_LIMIT: u64 = 1000;
/// How deep `recurse` follows relations of relations.
const RECURSION_DEPTH: i64 = 3;
/// Related events one request reads at most while skipping those the user may not see.
const SCAN_BUDGET: usize = 5000;

#[derive(Deserialize)]
pub(crate) struct RelationsQuery {
    from: Option<String>,
    to: Option<String>,
    dir: Option<String>,
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    limit: Option<u64>,
    #[serde(default, deserialize_with = "lenient::bool_opt")]
    recurse: Option<bool>,
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}`.
pub(crate) async fn relations(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((room_id, event_id)): Path<(String, String)>,
    query: MatrixResult<MatrixQuery<RelationsQuery>>,
) -> MatrixResult<Json<Value>> {
    related(&state, &session, &room_id, &event_id, None, None, query?.0).await
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}`.
pub(crate) async fn relations_of_type(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((room_id, event_id, rel_type)): Path<(String, String, String)>,
    query: MatrixResult<MatrixQuery<RelationsQuery>>,
) -> MatrixResult<Json<Value>> {
    related(&state, &session, &room_id, &event_id, Some(&rel_type), None, query?.0).await
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}`.
pub(crate) async fn relations_of_type_and_event_type(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((room_id, event_id, rel_type, event_type)): Path<(String, String, String, String)>,
    query: MatrixResult<MatrixQuery<RelationsQuery>>,
) -> MatrixResult<Json<Value>> {
    related(&state, &session, &room_id, &event_id, Some(&rel_type), Some(&event_type), query?.0).await
}

/// What a reader of the room may see: the history rules, the ignore list and the newest
/// position.
struct RoomView {
    readable: ReadableRoom,
    rules: access::HistoryRules,
    ignored: HashSet<String>,
    ceiling: i64,
}

impl RoomView {
    async fn of(
        state: &ClientState,
        conn: &mut Conn,
        room_id: &str,
        user_id: &str,
    ) -> MatrixResult<RoomView> {
        let readable = access::readable_room(state, conn, room_id, user_id).await?;
        let head = state.positions.current().events.0;
        let rules = access::history_rules(state, conn, &readable.room, user_id, head).await?;
        let ceiling = rules.visible_up_to().map_or(head, |last| last.min(head));
        let ignored = ignored_users(conn, user_id).await?;
        Ok(RoomView { readable, rules, ignored, ceiling })
    }

    fn reader<'a>(&'a self, filter: &'a RoomEventFilter, user_id: &'a str) -> PageReader<'a> {
        PageReader { room: &self.readable.room, rules: &self.rules, filter, ignored: &self.ignored, user_id }
    }

    fn viewer<'a>(&'a self, session: &'a Session) -> Viewer<'a> {
        Viewer {
            user_id: session.user_id.as_str(),
            device_id: session.device_id.as_str(),
            ignored: &self.ignored,
            up_to: self.ceiling,
        }
    }

    /// The room's event `event_id` if the user may see it; 404 otherwise (unknown, of another
    /// room, or hidden from them), so its existence is not revealed.
    async fn visible_event(
        &self,
        conn: &mut Conn,
        event_id: &str,
        user_id: &str,
    ) -> MatrixResult<StoredEvent> {
        let not_found = || MatrixError::not_found("Event not found");
        // From the database: a cached row may predate a redaction this process has not heard of.
        let row = event_store::event_by_id(conn, event_id).await?.ok_or_else(not_found)?;
        let event = StoredEvent::from_row(row)?;
        let filter = RoomEventFilter::default();
        if event.row.room_nid != self.readable.room.room_nid
            || event.row.stream_pos > self.ceiling
            || !self.reader(&filter, user_id).wants(&event)
        {
            return Err(not_found());
        }
        Ok(event)
    }
}

async fn related(
    state: &ClientState,
    session: &Session,
    room_id: &str,
    event_id: &str,
    rel_type: Option<&str>,
    event_type: Option<&str>,
    query: RelationsQuery,
) -> MatrixResult<Json<Value>> {
    let direction = match query.dir.as_deref() {
        Some("b") | None => Direction::Backwards,
        Some("f") => Direction::Forwards,
        Some(_) => return Err(MatrixError::invalid_param("`dir` must be `b` or `f`")),
    };
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_LIMIT) as usize;
    let from = query.from.as_deref().map(|token| access::parse_stream_point(token, "from")).transpose()?;
    let to = query.to.as_deref().map(|token| access::parse_stream_point(token, "to")).transpose()?;
    let depth = if query.recurse == Some(true) { RECURSION_DEPTH } else { 1 };
    let user_id = session.user_id.as_str();

    let mut conn = state.db.conn().await?;
    let view = RoomView::of(state, &mut conn, room_id, user_id).await?;
    view.visible_event(&mut conn, event_id, user_id).await?;
    let (mut after, mut up_to) = page_range(direction, from, to, view.ceiling);
    let filter = RoomEventFilter::default();
    let reader = view.reader(&filter, user_id);
    let batch = limit.clamp(50, 500);
    let mut events = Vec::new();
    let mut scanned = 0;
    let mut next = None;
    while after < up_to {
        let rows = relation_store::related_events(
            &mut conn,
            &relation_store::RelatedQuery {
                parent_id: event_id,
                room_nid: view.readable.room.room_nid,
                rel_type,
                event_type,
                depth,
                after,
                up_to,
                limit: batch as i64,
                newest_first: direction == Direction::Backwards,
            },
        )
        .await?;
        let exhausted = rows.len() < batch;
        for row in rows {
            match direction {
                Direction::Backwards => up_to = row.stream_pos - 1,
                Direction::Forwards => after = row.stream_pos,
            }
            scanned += 1;
            let event = StoredEvent::from_row(row)?;
            if reader.wants(&event) {
                events.push(event);
                if events.len() == limit {
                    break;
                }
            }
        }
        if events.len() == limit || (!exhausted && scanned >= SCAN_BUDGET) {
            next = Some(if direction == Direction::Backwards { up_to } else { after });
            break;
        }
        if exhausted {
            break;
        }
    }

    let chunk = view.viewer(session).client_events(state, &mut conn, &events).await?;
    let mut response = Map::new();
    response.insert("chunk".into(), Value::Array(chunk));
    if let Some(next) = next {
        response.insert("next_batch".into(), json!(access::point_token(next)));
    }
    if let Some(from) = query.from {
        response.insert("prev_batch".into(), json!(from));
    }
    if query.recurse.is_some() {
        response.insert("recursion_depth".into(), json!(depth));
    }
    Ok(Json(Value::Object(response)))
}

#[derive(Deserialize)]
pub(crate) struct ThreadsQuery {
    include: Option<String>,
    from: Option<String>,
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    limit: Option<u64>,
}

/// `GET /_matrix/client/v1/rooms/{roomId}/threads`: the room's thread roots, the thread with the
/// newest reply first, each with its thread summary; `include=participated` keeps the threads
/// whose root or a reply the user sent.
pub(crate) async fn threads(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    query: MatrixResult<MatrixQuery<ThreadsQuery>>,
) -> MatrixResult<Json<Value>> {
    let query = query?.0;
    let participated = match query.include.as_deref() {
        None | Some("all") => false,
        Some("participated") => true,
        Some(_) => return Err(MatrixError::invalid_param("`include` must be `all` or `participated`")),
    };
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
    let from = query.from.as_deref().map(|token| access::parse_stream_point(token, "from")).transpose()?;
    let user_id = session.user_id.as_str();

    let mut conn = state.db.conn().await?;
    let view = RoomView::of(&state, &mut conn, &room_id, user_id).await?;
    // A thread whose newest reply is at or before the `from` point.
    let below = from.map_or(view.ceiling, |point| point.min(view.ceiling)).saturating_add(1);
    let threads = relation_store::thread_roots(
        &mut conn,
        view.readable.room.room_nid,
        participated.then_some(user_id),
        below,
        view.ceiling,
        limit as i64,
    )
    .await?;
    let next =
        (threads.len() as u64 == limit).then(|| threads.last().map(|thread| thread.latest_pos - 1)).flatten();
    let mut roots = Vec::with_capacity(threads.len());
    for thread in threads {
        if let Ok(root) = view.visible_event(&mut conn, &thread.root_id, user_id).await {
            roots.push(root);
        }
    }
    let chunk = view.viewer(&session).client_events(&state, &mut conn, &roots).await?;
    let mut response = Map::new();
    response.insert("chunk".into(), Value::Array(chunk));
    if let Some(next) = next {
        response.insert("next_batch".into(), json!(access::point_token(next)));
    }
    Ok(Json(Value::Object(response)))
}

#[derive(Deserialize)]
pub(crate) struct ContextQuery {
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    limit: Option<u64>,
    filter: Option<String>,
}

/// `GET /rooms/{roomId}/context/{eventId}`: the event, up to half of `limit` events before it
/// (newest first) and the rest after it, each side filtered like `/messages`, with the state at
/// the last event returned (only the senders' members with `lazy_load_members`).
pub(crate) async fn context(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((room_id, event_id)): Path<(String, String)>,
    query: MatrixResult<MatrixQuery<ContextQuery>>,
) -> MatrixResult<Json<Value>> {
    let query = query?.0;
    let filter = query.filter.as_deref().map(filter::parse).transpose()?.unwrap_or_default();
    let limit = query.limit.unwrap_or(10).min(MAX_LIMIT) as usize;
    let user_id = session.user_id.as_str();

    let mut conn = state.db.conn().await?;
    let view = RoomView::of(&state, &mut conn, &room_id, user_id).await?;
    let event = view.visible_event(&mut conn, &event_id, user_id).await?;
    let position = event.row.stream_pos;
    let reader = view.reader(&filter, user_id);
    let wanted_before = limit / 2;
    let wanted_after = limit - wanted_before;
    let (before, start) = match wanted_before {
        0 => (Vec::new(), position - 1),
        wanted => {
            let page =
                reader.read(&mut conn, Direction::Backwards, HISTORY_FLOOR, position - 1, wanted).await?;
            let start =
                page.end.unwrap_or_else(|| page.events.last().map_or(position, |e| e.row.stream_pos) - 1);
            (page.events, start)
        }
    };
    let (after, end) = match wanted_after {
        0 => (Vec::new(), position),
        wanted => {
            let page = reader.read(&mut conn, Direction::Forwards, position, view.ceiling, wanted).await?;
            let end = page.end.unwrap_or_else(|| page.events.last().map_or(position, |e| e.row.stream_pos));
            (page.events, end)
        }
    };

    let mut shown = vec![event.clone()];
    shown.extend(before.iter().cloned());
    shown.extend(after.iter().cloned());
    let last = after.last().unwrap_or(&event);
    let snapshot = state.caches.snapshot(&mut conn, last.row.snapshot_nid).await?;
    let state_events = if filter.lazy_load_members {
        let senders: BTreeSet<&str> = shown.iter().map(|event| event.pdu.sender.as_str()).collect();
        let mut members = Vec::with_capacity(senders.len());
        for sender in senders {
            if let Some(member) =
                state.caches.state_event(&mut conn, &snapshot, "m.room.member", sender).await?
            {
                members.push(member);
            }
        }
        members
    } else {
        let mut events = state.caches.state_events(&mut conn, &snapshot, None).await?;
        events.sort_by_key(|event| event.row.stream_pos);
        events
    };

    let viewer = view.viewer(&session);
    let mut formatted = viewer.client_events(&state, &mut conn, &shown).await?.into_iter();
    let event_json = formatted.next().unwrap_or(Value::Null);
    let events_before: Vec<Value> = formatted.by_ref().take(before.len()).collect();
    let events_after: Vec<Value> = formatted.collect();
    let state_json = state
        .caches
        .client_events(&mut conn, &state_events, Some((user_id, session.device_id.as_str())))
        .await?;
    Ok(Json(json!({
        "start": access::point_token(start),
        "end": access::point_token(end),
        "event": event_json,
        "events_before": events_before,
        "events_after": events_after,
        "state": state_json,
    })))
}
