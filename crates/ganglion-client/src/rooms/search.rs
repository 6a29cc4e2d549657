//! `POST /search`: room events found by keyword in the rooms the user is joined to, among
//! those they may see (history visibility, their ignore list, the request's filter); best match
//! or newest first, paged with `next_batch`, with context around each result, grouped by room
//! or sender on request, and the rooms' state.
//!
//! The index is the database's own full-text search (see `ganglion_storage::search`): a
//! redaction removes an event from it.

use std::collections::{BTreeSet, HashMap, HashSet};

use axum::{Json, extract::State};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixQuery, MatrixResult, Session};
use ganglion_state::StoredEvent;
use ganglion_storage::{
    Conn,
    rooms::{self as room_store, RoomRow},
    search::{self as search_store, SearchOrder, SearchQuery},
};
use ganglion_types::RoomNid;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    access::{self, HISTORY_FLOOR, HistoryRules},
    filter::RoomEventFilter,
    messages::{Direction, PageReader, Viewer, ignored_users},
};
use crate::ClientState;

/// The fields a search may look in.
const KEYS: [&str; 3] = ["content.body", "content.name", "content.topic"];
/// Results a page holds at most.
const MAX_LIMIT: u64 = 100;
/// Events on either side of a result at most.
const MAX_CONTEXT: u64 = 20;
/// Matches one request reads at most while skipping those the user may not see.
const SCAN_BUDGET: usize = 2000;

#[derive(Deserialize)]
pub(crate) struct SearchRequest {
    search_categories: Categories,
}

#[derive(Deserialize)]
struct Categories {
    room_events: Option<RoomEventsCriteria>,
}

#[derive(Deserialize)]
struct RoomEventsCriteria {
    search_term: String,
    keys: Option<Vec<String>>,
    #[serde(default)]
    filter: RoomEventFilter,
    order_by: Option<String>,
    event_context: Option<ContextSpec>,
    #[serde(default)]
    include_state: bool,
    groupings: Option<Groupings>,
}

#[derive(Deserialize)]
struct ContextSpec {
    before_limit: Option<u64>,
    after_limit: Option<u64>,
    #[serde(default)]
    include_profile: bool,
}

#[derive(Deserialize)]
struct Groupings {
    #[serde(default)]
    group_by: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    key: String,
}

#[derive(Deserialize)]
pub(crate) struct SearchParams {
    next_batch: Option<String>,
}

/// Where a page starts: the matches to skip (by rank) or the position to stay below (by
/// recency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    Offset(i64),
    Below(i64),
}

fn cursor_token(cursor: Cursor) -> String {
    match cursor {
        Cursor::Offset(offset) => format!("r{offset}"),
        Cursor::Below(position) => format!("t{}", access::point_token(position)),
    }
}

fn parse_cursor(token: &str, order: SearchOrder) -> MatrixResult<Cursor> {
    let invalid = || MatrixError::invalid_param("Invalid `next_batch` token");
    match (order, token.split_at_checked(1)) {
        (SearchOrder::Rank, Some(("r", offset))) => {
            offset.parse::<i64>().ok().filter(|offset| *offset >= 0).map(Cursor::Offset).ok_or_else(invalid)
        }
        (SearchOrder::Recent, Some(("t", point))) => {
            access::stream_point(point).map(Cursor::Below).ok_or_else(invalid)
        }
        _ => Err(invalid()),
    }
}

/// What the user may see of one room.
struct RoomView {
    room: RoomRow,
    rules: HistoryRules,
}

/// `POST /search`.
pub(crate) async fn search(
    State(state): State<ClientState>,
    Auth(session): Auth,
    params: MatrixResult<MatrixQuery<SearchParams>>,
    MatrixJson(body): MatrixJson<SearchRequest>,
) -> MatrixResult<Json<Value>> {
    let params = params?.0;
    let Some(criteria) = body.search_categories.room_events else {
        // No category this server searches was asked for.
        return Ok(Json(json!({ "search_categories": {} })));
    };
    let order = match criteria.order_by.as_deref() {
        None | Some("rank") => SearchOrder::Rank,
        Some("recent") => SearchOrder::Recent,
        Some(_) => return Err(MatrixError::invalid_param("`order_by` must be `rank` or `recent`")),
    };
    let keys: Vec<&str> = match &criteria.keys {
        None => KEYS.to_vec(),
        Some(keys) => {
            let mut wanted = Vec::with_capacity(keys.len());
            for key in keys {
                let known = KEYS.iter().find(|known| **known == key.as_str()).ok_or_else(|| {
                    MatrixError::invalid_param(format!("`keys` may only name {}", KEYS.join(", ")))
                })?;
                wanted.push(*known);
            }
            wanted
        }
    };
    for group in criteria.groupings.iter().flat_map(|groupings| &groupings.group_by) {
        access::one_of(&group.key, &["room_id", "sender"], "group_by.key")?;
    }
    let limit = criteria.filter.limit.unwrap_or(10).clamp(1, MAX_LIMIT) as usize;
    let mut cursor = match (&params.next_batch, order) {
        (Some(token), _) => parse_cursor(token, order)?,
        (None, SearchOrder::Rank) => Cursor::Offset(0),
        (None, SearchOrder::Recent) => Cursor::Below(i64::MAX),
    };
    let user_id = session.user_id.as_str();

    let mut conn = state.db.conn().await?;
    let head = state.positions.current().events.0;
    let joined: Vec<RoomNid> = room_store::memberships_of_user(&mut conn, user_id)
        .await?
        .into_iter()
        .filter(|row| row.membership == "join")
        .map(|row| row.room_nid)
        .collect();
    let mut rooms: HashMap<RoomNid, RoomRow> = HashMap::new();
    for room in room_store::rooms_by_nid(&mut conn, &joined).await? {
        if criteria.filter.allows_room(&room.room_id) {
            rooms.insert(room.room_nid, room);
        }
    }
    let room_nids: Vec<RoomNid> = rooms.keys().copied().collect();
    let ignored = ignored_users(&mut conn, user_id).await?;
    let query = |cursor: Cursor, batch: usize| SearchQuery {
        term: &criteria.search_term,
        rooms: &room_nids,
        keys: &keys,
        order,
        offset: match cursor {
            Cursor::Offset(offset) => offset,
            Cursor::Below(_) => 0,
        },
        below: match cursor {
            Cursor::Below(position) => Some(position.min(head.saturating_add(1))),
            Cursor::Offset(_) => None,
        },
        limit: batch as i64,
    };
    let count = search_store::count_matches(&mut conn, &query(cursor, limit)).await?;

    // Matches in order, keeping those the user may see, until the page is full.
    let mut views: HashMap<RoomNid, RoomView> = HashMap::new();
    let mut results: Vec<(f64, StoredEvent)> = Vec::new();
    let mut scanned = 0;
    let mut next = None;
    let batch = (limit * 2).max(20);
    'pages: loop {
        let hits = search_store::search_events(&mut conn, &query(cursor, batch)).await?;
        let exhausted = hits.len() < batch;
        let nids: Vec<_> = hits.iter().map(|hit| hit.event_nid).collect();
        let events: HashMap<_, _> =
            state.caches.events(&mut conn, &nids).await?.into_iter().map(|e| (e.row.event_nid, e)).collect();
        for hit in hits {
            scanned += 1;
            cursor = match cursor {
                Cursor::Offset(offset) => Cursor::Offset(offset + 1),
                Cursor::Below(_) => Cursor::Below(hit.stream_pos),
            };
            let Some(event) = events.get(&hit.event_nid) else { continue };
            if event.row.stream_pos > head {
                continue;
            }
            let view = match views.get(&event.row.room_nid) {
                Some(view) => view,
                None => {
                    let Some(room) = rooms.get(&event.row.room_nid) else { continue };
                    let rules = access::history_rules(&state, &mut conn, room, user_id, head).await?;
                    views.entry(event.row.room_nid).or_insert(RoomView { room: room.clone(), rules })
                }
            };
            let reader = PageReader {
                room: &view.room,
                rules: &view.rules,
                filter: &criteria.filter,
                ignored: &ignored,
                user_id,
            };
            if reader.wants(event) {
                results.push((hit.rank, event.clone()));
                if results.len() == limit {
                    next = Some(cursor);
                    break 'pages;
                }
            }
        }
        if exhausted {
            break;
        }
        if scanned >= SCAN_BUDGET {
            next = Some(cursor);
            break;
        }
    }

    let viewer = Viewer { user_id, device_id: session.device_id.as_str(), ignored: &ignored, up_to: head };
    let events: Vec<StoredEvent> = results.iter().map(|(_, event)| event.clone()).collect();
    let formatted = viewer.client_events(&state, &mut conn, &events).await?;
    let mut result_values = Vec::with_capacity(results.len());
    for ((rank, event), value) in results.iter().zip(formatted) {
        let mut result = Map::new();
        result.insert("rank".into(), json!(rank));
        result.insert("result".into(), value);
        if let Some(spec) = &criteria.event_context
            && let Some(view) = views.get(&event.row.room_nid)
        {
            let context = event_context(&state, &mut conn, &session, view, &ignored, event, spec).await?;
            result.insert("context".into(), context);
        }
        result_values.push(Value::Object(result));
    }

    let mut room_events = Map::new();
    room_events.insert("count".into(), json!(count));
    room_events.insert("highlights".into(), json!(highlights(&criteria.search_term)));
    room_events.insert("results".into(), Value::Array(result_values));
    if let Some(next) = next {
        room_events.insert("next_batch".into(), json!(cursor_token(next)));
    }
    if let Some(groupings) = &criteria.groupings {
        let mut groups = Map::new();
        for group in &groupings.group_by {
            groups.insert(group.key.clone(), Value::Object(group_results(&events, &group.key)));
        }
        room_events.insert("groups".into(), Value::Object(groups));
    }
    if criteria.include_state {
        let mut states = Map::new();
        let result_rooms: BTreeSet<RoomNid> = events.iter().map(|event| event.row.room_nid).collect();
        for room_nid in result_rooms {
            let Some(room) = rooms.get(&room_nid) else { continue };
            let snapshot = access::snapshot(&state, &mut conn, room.current_snapshot_nid).await?;
            let mut state_events = state.caches.state_events(&mut conn, &snapshot, None).await?;
            state_events.sort_by_key(|event| event.row.stream_pos);
            let formatted = state
                .caches
                .client_events(&mut conn, &state_events, Some((user_id, session.device_id.as_str())))
                .await?;
            states.insert(room.room_id.clone(), Value::Array(formatted));
        }
        room_events.insert("state".into(), Value::Object(states));
    }
    Ok(Json(json!({ "search_categories": { "room_events": room_events } })))
}

/// The words of the search term, lowercased: what a client highlights in the results.
fn highlights(term: &str) -> Vec<String> {
    let words: BTreeSet<String> = term
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect();
    words.into_iter().collect()
}

/// The results grouped by `key` (`room_id` or `sender`): each group's event ids in result order,
/// and the groups ordered by their best result.
fn group_results(events: &[StoredEvent], key: &str) -> Map<String, Value> {
    let mut order: Vec<String> = Vec::new();
    let mut members: HashMap<String, Vec<String>> = HashMap::new();
    for event in events {
        let value = match key {
            "sender" => event.row.sender.clone(),
            _ => event.pdu.room_id.to_string(),
        };
        if !members.contains_key(&value) {
            order.push(value.clone());
        }
        members.entry(value).or_default().push(event.row.event_id.clone());
    }
    let mut groups = Map::new();
    for (index, value) in order.into_iter().enumerate() {
        let results = members.remove(&value).unwrap_or_default();
        groups.insert(value, json!({ "results": results, "order": index + 1 }));
    }
    groups
}

/// The events around one result, as `/context` gives them, with the senders' profiles on
/// request.
async fn event_context(
    state: &ClientState,
    conn: &mut Conn,
    session: &Session,
    view: &RoomView,
    ignored: &HashSet<String>,
    event: &StoredEvent,
    spec: &ContextSpec,
) -> MatrixResult<Value> {
    let user_id = session.user_id.as_str();
    let head = state.positions.current().events.0;
    let ceiling = view.rules.visible_up_to().map_or(head, |last| last.min(head));
    let filter = RoomEventFilter::default();
    let reader = PageReader { room: &view.room, rules: &view.rules, filter: &filter, ignored, user_id };
    let position = event.row.stream_pos;
    let before_limit = spec.before_limit.unwrap_or(5).min(MAX_CONTEXT) as usize;
    let after_limit = spec.after_limit.unwrap_or(5).min(MAX_CONTEXT) as usize;
    let (before, start) = match before_limit {
        0 => (Vec::new(), position - 1),
        wanted => {
            let page = reader.read(conn, Direction::Backwards, HISTORY_FLOOR, position - 1, wanted).await?;
            let start =
                page.end.unwrap_or_else(|| page.events.last().map_or(position, |e| e.row.stream_pos) - 1);
            (page.events, start)
        }
    };
    let (after, end) = match after_limit {
        0 => (Vec::new(), position),
        wanted => {
            let page = reader.read(conn, Direction::Forwards, position, ceiling, wanted).await?;
            let end = page.end.unwrap_or_else(|| page.events.last().map_or(position, |e| e.row.stream_pos));
            (page.events, end)
        }
    };
    let viewer = Viewer { user_id, device_id: session.device_id.as_str(), ignored, up_to: ceiling };
    let mut context = Map::new();
    context.insert("start".into(), json!(access::point_token(start)));
    context.insert("end".into(), json!(access::point_token(end)));
    context.insert("events_before".into(), Value::Array(viewer.client_events(state, conn, &before).await?));
    context.insert("events_after".into(), Value::Array(viewer.client_events(state, conn, &after).await?));
    if spec.include_profile {
        let snapshot = state.caches.snapshot(conn, event.row.snapshot_nid).await?;
        let senders: BTreeSet<&str> = before
            .iter()
            .chain(std::iter::once(event))
            .chain(after.iter())
            .map(|e| e.pdu.sender.as_str())
            .collect();
        let mut profiles = Map::new();
        for sender in senders {
            let Some(member) = state.caches.state_event(conn, &snapshot, "m.room.member", sender).await?
            else {
                continue;
            };
            let content = member.pdu.content_value();
            let mut profile = Map::new();
            for field in ["displayname", "avatar_url"] {
                if let Some(value) = content.get(field).filter(|value| value.is_string()) {
                    profile.insert(field.into(), value.clone());
                }
            }
            profiles.insert(sender.to_owned(), Value::Object(profile));
        }
        context.insert("profile_info".into(), Value::Object(profiles));
    }
    Ok(Value::Object(context))
}
