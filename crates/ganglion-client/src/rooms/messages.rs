//! The timeline: `/messages` pagination and single events, each filtered by history visibility
//! and by the user's ignore list (an ignored user's non-state events are left out).
//!
//! A pagination token is a point between two events of the events stream (see
//! `access::stream_point`): backwards from `P` reads events at positions `<= P`, newest first;
//! forwards reads positions `> P`. The `end` of a page is the point just past the last event
//! read, so each event appears on exactly one page.

use std::collections::{BTreeSet, HashSet};

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_events::ignored_users::{IGNORED_USER_LIST, ignored_users_of};
use ganglion_http::{AtTimestamp, Auth, MatrixError, MatrixQuery, MatrixResult, lenient};
use ganglion_state::{AggregationViewer, StoredEvent};
use ganglion_storage::{Conn, events as event_store, rooms::RoomRow, streams as stream_store};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::access::HISTORY_FLOOR;
use super::{
    access::{self, HistoryRules},
    filter::{self, RoomEventFilter},
};
use crate::ClientState;

/// Events a page may hold at most.
const MAX_LIMIT: u64 = 1000;
/// Events one request reads at most while skipping filtered-out or invisible ones; past it the
/// page ends early (with an `end` token) rather than scanning a huge history.
const SCAN_BUDGET: usize = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Backwards,
    Forwards,
}

/// The range `(after, up_to]` of stream positions a page may read. `ceiling` is the newest
/// position the reader may see.
pub(crate) fn page_range(
    direction: Direction,
    from: Option<i64>,
    to: Option<i64>,
    ceiling: i64,
) -> (i64, i64) {
    match direction {
        Direction::Backwards => {
            (to.unwrap_or(HISTORY_FLOOR).max(HISTORY_FLOOR), from.unwrap_or(ceiling).min(ceiling))
        }
        Direction::Forwards => {
            (from.unwrap_or(HISTORY_FLOOR).max(HISTORY_FLOOR), to.unwrap_or(ceiling).min(ceiling))
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct MessagesQuery {
    from: Option<String>,
    to: Option<String>,
    dir: Option<String>,
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    limit: Option<u64>,
    filter: Option<String>,
}

/// `GET /rooms/{roomId}/messages`.
pub(crate) async fn messages(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    MatrixQuery(query): MatrixQuery<MessagesQuery>,
) -> MatrixResult<Json<Value>> {
    let direction = match query.dir.as_deref() {
        Some("b") => Direction::Backwards,
        Some("f") => Direction::Forwards,
        Some(_) => return Err(MatrixError::invalid_param("`dir` must be `b` or `f`")),
        None => return Err(MatrixError::missing_param("Missing `dir`")),
    };
    let filter = query.filter.as_deref().map(filter::parse).transpose()?.unwrap_or_default();
    let limit = query.limit.or(filter.limit).unwrap_or(10).clamp(1, MAX_LIMIT) as usize;
    let from = query.from.as_deref().map(|token| access::parse_stream_point(token, "from")).transpose()?;
    let to = query.to.as_deref().map(|token| access::parse_stream_point(token, "to")).transpose()?;
    let user_id = session.user_id.as_str();

    let mut conn = state.db.conn().await?;
    let readable = access::readable_room(&state, &mut conn, &room_id, user_id).await?;
    let head = state.positions.current().events.0;
    let rules = access::history_rules(&state, &mut conn, &readable.room, user_id, head).await?;
    let ceiling = rules.visible_up_to().map_or(head, |last| last.min(head));
    let (after, up_to) = page_range(direction, from, to, ceiling);
    let ignored = ignored_users(&mut conn, user_id).await?;
    let page = if filter.allows_room(&readable.room.room_id) {
        let reader =
            PageReader { room: &readable.room, rules: &rules, filter: &filter, ignored: &ignored, user_id };
        let page = reader.read(&mut conn, direction, after, up_to, limit).await?;
        // Paging back past the oldest event here: other servers of the room may have older
        // history. What they send sits below every other event, so reading the page again
        // continues into it.
        if direction == Direction::Backwards
            && page.end.is_none()
            && page.events.len() < limit
            && super::backfill::fetch_older(&state, &mut conn, &readable.room).await > 0
        {
            reader.read(&mut conn, direction, after, up_to, limit).await?
        } else {
            page
        }
    } else {
        Page { events: Vec::new(), end: None }
    };

    let viewer = Viewer { user_id, device_id: session.device_id.as_str(), ignored: &ignored, up_to: ceiling };
    let chunk = viewer.client_events(&state, &mut conn, &page.events).await?;
    let start = match query.from {
        Some(from) => from,
        None => access::point_token(cursor(direction, after, up_to)),
    };
    let mut response = Map::new();
    response.insert("chunk".into(), Value::Array(chunk));
    response.insert("start".into(), json!(start));
    if let Some(end) = page.end {
        response.insert("end".into(), json!(access::point_token(end)));
    }
    if filter.lazy_load_members {
        let members = sender_members(&state, &mut conn, &page.events).await?;
        response.insert(
            "state".into(),
            Value::Array(
                state
                    .caches
                    .client_events(&mut conn, &members, Some((user_id, session.device_id.as_str())))
                    .await?,
            ),
        );
    }
    Ok(Json(Value::Object(response)))
}

pub(super) struct Page {
    pub events: Vec<StoredEvent>,
    /// The point to continue from; `None` when the range is exhausted.
    pub end: Option<i64>,
}

pub(super) struct PageReader<'a> {
    pub room: &'a RoomRow,
    pub rules: &'a HistoryRules,
    pub filter: &'a RoomEventFilter,
    pub ignored: &'a HashSet<String>,
    pub user_id: &'a str,
}

impl PageReader<'_> {
    /// Reads the events of `(after, up_to]` in `direction` until `limit` pass the filter and the
    /// history rules, the range ends, or the scan budget is spent.
    pub(super) async fn read(
        &self,
        conn: &mut Conn,
        direction: Direction,
        mut after: i64,
        mut up_to: i64,
        limit: usize,
    ) -> MatrixResult<Page> {
        let batch = limit.clamp(50, 500);
        let mut events = Vec::new();
        let mut scanned = 0;
        loop {
            if after >= up_to {
                return Ok(Page { events, end: None });
            }
            let newest_first = direction == Direction::Backwards;
            let rows = event_store::events_in_room(
                conn,
                self.room.room_nid,
                after,
                up_to,
                batch as i64,
                newest_first,
            )
            .await?;
            let exhausted = rows.len() < batch;
            for row in rows {
                let position = row.stream_pos;
                match direction {
                    Direction::Backwards => up_to = position - 1,
                    Direction::Forwards => after = position,
                }
                scanned += 1;
                let event = StoredEvent::from_row(row)?;
                if self.wants(&event) {
                    events.push(event);
                    if events.len() == limit {
                        return Ok(Page { events, end: Some(cursor(direction, after, up_to)) });
                    }
                }
            }
            if exhausted {
                return Ok(Page { events, end: None });
            }
            if scanned >= SCAN_BUDGET {
                return Ok(Page { events, end: Some(cursor(direction, after, up_to)) });
            }
        }
    }

    pub(super) fn wants(&self, event: &StoredEvent) -> bool {
        let pdu = &event.pdu;
        let kind = pdu.kind.to_string();
        let two_sided = match pdu.state_key.as_deref() {
            Some(key) => {
                kind == "m.room.history_visibility" && key.is_empty()
                    || kind == "m.room.member" && key == self.user_id
            }
            None => false,
        };
        if !self.rules.can_see(event.row.stream_pos, two_sided) {
            return false;
        }
        if !pdu.is_state() && self.ignored.contains(pdu.sender.as_str()) {
            return false;
        }
        let has_url = self.filter.needs_content() && pdu.content_value().get("url").is_some();
        self.filter.allows_event(&kind, Some(pdu.sender.as_str()), has_url)
    }
}

/// Who reads events, for the parts of their client form that depend on the reader: their own
/// transaction ids and the bundled aggregations (without ignored users, within what they may see).
pub(super) struct Viewer<'a> {
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub ignored: &'a HashSet<String>,
    pub up_to: i64,
}

impl Viewer<'_> {
    /// `events` in client form, with their bundled aggregations.
    pub(super) async fn client_events(
        &self,
        state: &ClientState,
        conn: &mut Conn,
        events: &[StoredEvent],
    ) -> MatrixResult<Vec<Value>> {
        let mut formatted =
            state.caches.client_events(conn, events, Some((self.user_id, self.device_id))).await?;
        let aggregation_viewer =
            AggregationViewer { user_id: self.user_id, ignored: self.ignored, up_to: self.up_to };
        state.caches.bundle_aggregations(conn, events, &mut formatted, &aggregation_viewer).await?;
        Ok(formatted)
    }
}

/// The users `user_id` ignores (read at each request: paging is not the hot path).
pub(super) async fn ignored_users(conn: &mut Conn, user_id: &str) -> MatrixResult<HashSet<String>> {
    let content = stream_store::account_data_content(conn, user_id, "", IGNORED_USER_LIST).await?;
    Ok(content.map(|content| ignored_users_of(&content, user_id)).unwrap_or_default())
}

fn cursor(direction: Direction, after: i64, up_to: i64) -> i64 {
    match direction {
        Direction::Backwards => up_to,
        Direction::Forwards => after,
    }
}

/// The member events of the senders of `events`, as of the first event of the page (lazy
/// loading of members).
pub(super) async fn sender_members(
    state: &ClientState,
    conn: &mut Conn,
    events: &[StoredEvent],
) -> MatrixResult<Vec<StoredEvent>> {
    let Some(first) = events.first() else { return Ok(Vec::new()) };
    let snapshot = state.caches.snapshot(conn, first.row.snapshot_nid).await?;
    let senders: BTreeSet<&str> = events.iter().map(|event| event.pdu.sender.as_str()).collect();
    let mut members = Vec::with_capacity(senders.len());
    for sender in senders {
        if let Some(member) = state.caches.state_event(conn, &snapshot, "m.room.member", sender).await? {
            members.push(member);
        }
    }
    Ok(members)
}

/// `GET /rooms/{roomId}/event/{eventId}`: 404 for an unknown event, one of another room, or one
/// the user may not see.
pub(crate) async fn event(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((room_id, event_id)): Path<(String, String)>,
) -> MatrixResult<Json<Value>> {
    let user_id = session.user_id.as_str();
    let mut conn = state.db.conn().await?;
    let readable = access::readable_room(&state, &mut conn, &room_id, user_id).await?;
    let not_found = || MatrixError::not_found("Event not found");
    // Read from the database rather than the event cache, whose rows may predate a redaction
    // this process has not heard of.
    let row = event_store::event_by_id(&mut conn, &event_id).await?.ok_or_else(not_found)?;
    let event = StoredEvent::from_row(row)?;
    let head = state.positions.current().events.0;
    if event.row.room_nid != readable.room.room_nid || event.row.stream_pos > head {
        return Err(not_found());
    }
    let rules = access::history_rules(&state, &mut conn, &readable.room, user_id, head).await?;
    let ignored = ignored_users(&mut conn, user_id).await?;
    let reader = PageReader {
        room: &readable.room,
        rules: &rules,
        filter: &RoomEventFilter::default(),
        ignored: &ignored,
        user_id,
    };
    if !reader.wants(&event) {
        return Err(not_found());
    }
    let ceiling = rules.visible_up_to().map_or(head, |last| last.min(head));
    let viewer = Viewer { user_id, device_id: session.device_id.as_str(), ignored: &ignored, up_to: ceiling };
    let formatted = viewer.client_events(&state, &mut conn, std::slice::from_ref(&event)).await?;
    Ok(Json(formatted.into_iter().next().ok_or_else(not_found)?))
}

/// `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event?ts=…&dir=f|b`: the room's event
/// nearest to `ts` in that direction, of those the user may read (a former member's end at
/// their leave), from this server's copy of the room.
pub(crate) async fn timestamp_to_event(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    query: MatrixResult<MatrixQuery<AtTimestamp>>,
) -> MatrixResult<Json<Value>> {
    let (ts, forward) = query?.0.parse()?;
    let mut conn = state.db.conn().await?;
    let readable = access::readable_room(&state, &mut conn, &room_id, session.user_id.as_str()).await?;
    let not_found = || MatrixError::not_found("No event was found in that direction");
    let (event_id, origin_server_ts) =
        event_store::event_nearest_to_ts(&mut conn, readable.room.room_nid, ts, forward)
            .await?
            .ok_or_else(not_found)?;
    if let Some(left_at) = readable.left_at {
        let row = event_store::event_by_id(&mut conn, &event_id).await?.ok_or_else(not_found)?;
        if row.stream_pos > left_at {
            return Err(not_found());
        }
    }
    Ok(Json(json!({ "event_id": event_id, "origin_server_ts": origin_server_ts })))
}
