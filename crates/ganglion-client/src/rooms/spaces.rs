//! Room previews and spaces: the room summary (`/room_summary`, what a client shows before the
//! user joins) and a space's hierarchy (`/hierarchy`, its rooms and subspaces, breadth first).
//!
//! A room is shown to those who may see it: anyone when its join rule is `public`, `knock` or
//! `knock_restricted` or its history is world-readable; its members, invitees and knockers; and,
//! under a `restricted` join rule, the members of a room it allows. Others get 404, as if it
//! did not exist. A hierarchy's rooms this server is not in are asked of the servers their
//! `m.space.child` events name (the federation `/hierarchy`), which answer as they see fit for
//! this server; a room summary of such a room is not.

use std::collections::{HashSet, VecDeque};

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_http::{Auth, MatrixError, MatrixQuery, MatrixResult, MaybeAuth, lenient};
use ganglion_state::hierarchy::{SpaceRoom, space_room};
use ganglion_storage::{
    Conn,
    rooms::{self as room_store, RoomRow},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access;
use crate::ClientState;

/// Rooms a hierarchy page holds at most.
const MAX_LIMIT: u64 = 100;
/// Rooms one hierarchy request walks at most, however the space nests.
const MAX_WALK: usize = 2000;
/// Rooms of other servers one hierarchy request asks about at most.
const MAX_REMOTE: usize = 50;

/// A room this server is in (has events of, not just an invite to).
async fn known_room(conn: &mut Conn, room_id: &str) -> MatrixResult<Option<RoomRow>> {
    Ok(room_store::room_by_id(conn, room_id).await?.filter(|room| room.latest_event_nid.is_some()))
}

/// Whether the user (or, with `None`, anyone) may see the room's summary.
async fn may_preview(
    conn: &mut Conn,
    space: &SpaceRoom,
    room: &RoomRow,
    user_id: Option<&str>,
) -> MatrixResult<bool> {
    if matches!(space.join_rule.as_deref(), Some("public" | "knock" | "knock_restricted"))
        || space.summary["world_readable"] == json!(true)
    {
        return Ok(true);
    }
    let Some(user_id) = user_id else { return Ok(false) };
    if let Some(row) = access::membership(conn, room, user_id).await?
        && matches!(row.membership.as_str(), "join" | "invite" | "knock")
    {
        return Ok(true);
    }
    if matches!(space.join_rule.as_deref(), Some("restricted" | "knock_restricted")) {
        for allowed in &space.allowed_room_ids {
            if let Some(allowed) = known_room(conn, allowed).await?
                && access::membership(conn, &allowed, user_id)
                    .await?
                    .is_some_and(|row| row.membership == "join")
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

#[derive(Deserialize)]
pub(crate) struct SummaryQuery {
    /// One server, or several (the key repeated).
    via: Option<Value>,
}

/// `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}`, with or without an access token. A
/// room only other servers are in is asked of the `via` servers (their federation
/// `/hierarchy`, which shows this server what it may see).
pub(crate) async fn room_summary(
    State(state): State<ClientState>,
    MaybeAuth(session): MaybeAuth,
    Path(room_id_or_alias): Path<String>,
    query: MatrixResult<MatrixQuery<SummaryQuery>>,
) -> MatrixResult<Json<Value>> {
    let via: Vec<String> = match query?.0.via {
        Some(Value::String(server)) => vec![server],
        Some(Value::Array(servers)) => servers.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    };
    let not_found = || MatrixError::not_found("Room not found");
    let mut conn = state.db.conn().await?;
    let room_id = if room_id_or_alias.starts_with('#') {
        let alias = access::room_alias(&room_id_or_alias)?;
        room_store::room_id_by_alias(&mut conn, alias.as_str()).await?.ok_or_else(not_found)?
    } else {
        access::room_id(&room_id_or_alias)?.to_string()
    };
    let Some(room) = known_room(&mut conn, &room_id).await? else {
        drop(conn);
        let space = remote_space_room(&state, &room_id, &via, false).await.ok_or_else(not_found)?;
        let mut summary = space.summary;
        if let Some(entry) = summary.as_object_mut() {
            entry.remove("children_state");
        }
        return Ok(Json(summary));
    };
    let space = space_room(&state.caches, &mut conn, &room).await?;
    let user_id = session.as_ref().map(|session| session.user_id.as_str());
    if !may_preview(&mut conn, &space, &room, user_id).await? {
        return Err(not_found());
    }
    let mut summary = space.summary;
    if let Some(entry) = summary.as_object_mut() {
        entry.remove("children_state");
        if let Some(user_id) = user_id
            && let Some(row) = access::membership(&mut conn, &room, user_id).await?
        {
            entry.insert("membership".into(), json!(row.membership));
        }
    }
    Ok(Json(summary))
}

#[derive(Deserialize)]
pub(crate) struct HierarchyQuery {
    from: Option<String>,
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    limit: Option<u64>,
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    max_depth: Option<u64>,
    #[serde(default, deserialize_with = "lenient::bool_opt")]
    suggested_only: Option<bool>,
}

/// A space's children in the spec's order: by their `order` (when it is a valid one: at most 50
/// printable ASCII characters) before those without, then by when their `m.space.child` event
/// was sent, then by room id.
fn ordered_children(space: &SpaceRoom) -> Vec<(String, bool, Vec<String>)> {
    let state = space.summary["children_state"].as_array().cloned().unwrap_or_default();
    let mut keyed: Vec<(Option<String>, u64, String, bool)> = space
        .children
        .iter()
        .map(|(child, suggested)| {
            let event = state.iter().find(|event| event["state_key"].as_str() == Some(child.as_str()));
            let order = event
                .and_then(|event| event["content"]["order"].as_str())
                .filter(|order| order.len() <= 50 && order.bytes().all(|byte| (0x20..=0x7e).contains(&byte)))
                .map(str::to_owned);
            let ts = event.and_then(|event| event["origin_server_ts"].as_u64()).unwrap_or(u64::MAX);
            (order, ts, child.clone(), *suggested)
        })
        .collect();
    keyed.sort_by(|a, b| match (&a.0, &b.0) {
        (Some(x), Some(y)) => x.cmp(y).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.1.cmp(&b.1).then(a.2.cmp(&b.2)),
    });
    let via_of = |child: &str| {
        let event = state.iter().find(|event| event["state_key"].as_str() == Some(child));
        event
            .and_then(|event| event["content"]["via"].as_array())
            .map(|via| via.iter().filter_map(|server| server.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    keyed
        .into_iter()
        .map(|(_, _, child, suggested)| {
            let via = via_of(&child);
            (child, suggested, via)
        })
        .collect()
}

/// A room of other servers as the first of `via` that answers shows it to this server (the
/// federation `/hierarchy`, which leaves out what this server may not see); `None` when none
/// does.
async fn remote_space_room(
    state: &ClientState,
    room_id: &str,
    via: &[String],
    suggested_only: bool,
) -> Option<SpaceRoom> {
    let path = format!(
        "/_matrix/federation/v1/hierarchy/{}?suggested_only={suggested_only}",
        ganglion_federation::client::encode(room_id)
    );
    for server in via.iter().filter(|server| **server != state.config.server_name) {
        let Ok(server) = ganglion_events::ruma::OwnedServerName::try_from(server.as_str()) else { continue };
        let answer = match state.federation.client.get(&server, &path).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::info!(%server, room_id, %error, "a server would not show a room of a space");
                continue;
            }
        };
        let summary = answer["room"].clone();
        if summary["room_id"].as_str() != Some(room_id) {
            continue;
        }
        let children = summary["children_state"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|event| {
                let child = event["state_key"].as_str()?.to_owned();
                Some((child, event["content"]["suggested"] == json!(true)))
            })
            .collect();
        let join_rule = summary["join_rule"].as_str().map(str::to_owned);
        return Some(SpaceRoom { summary, children, join_rule, allowed_room_ids: Vec::new() });
    }
    None
}

/// The token of a hierarchy page: the rooms already given, and the walk's parameters, which a
/// later page must ask for again.
fn page_token(offset: usize, max_depth: Option<u64>, suggested_only: bool) -> String {
    let depth = max_depth.map_or_else(|| "-".to_owned(), |depth| depth.to_string());
    format!("h{offset}_{depth}_{}", u8::from(suggested_only))
}

/// `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`: the space and the rooms under it the user
/// may see, breadth first, each with its `m.space.child` events; `max_depth` bounds the levels,
/// `suggested_only` follows only suggested children, and pages continue with `from`.
pub(crate) async fn hierarchy(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    query: MatrixResult<MatrixQuery<HierarchyQuery>>,
) -> MatrixResult<Json<Value>> {
    let query = query?.0;
    let room_id = access::room_id(&room_id)?;
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_LIMIT) as usize;
    let suggested_only = query.suggested_only.unwrap_or(false);
    let offset = match &query.from {
        None => 0,
        Some(token) => {
            let offset = token
                .strip_prefix('h')
                .and_then(|rest| rest.split('_').next())
                .and_then(|offset| offset.parse::<usize>().ok());
            match offset {
                Some(offset) if *token == page_token(offset, query.max_depth, suggested_only) => offset,
                _ => {
                    return Err(MatrixError::invalid_param(
                        "Invalid `from` token, or one for other `max_depth` or `suggested_only`",
                    ));
                }
            }
        }
    };
    let user_id = session.user_id.as_str();
    let mut conn = state.db.conn().await?;
    let forbidden = || MatrixError::forbidden("You may not see this room");
    let root = known_room(&mut conn, room_id.as_str()).await?.ok_or_else(forbidden)?;
    let root_space = space_room(&state.caches, &mut conn, &root).await?;
    if !may_preview(&mut conn, &root_space, &root, Some(user_id)).await? {
        return Err(forbidden());
    }

    // Each room to walk, its depth, and the servers its parent's child event names.
    let mut queue: VecDeque<(String, u64, Vec<String>)> =
        VecDeque::from([(room_id.to_string(), 0, Vec::new())]);
    let mut seen: HashSet<String> = HashSet::from([room_id.to_string()]);
    let mut shown = 0;
    let mut rooms = Vec::new();
    let mut more = false;
    let mut walked = 0;
    let mut asked = 0;
    while let Some((current, depth, via)) = queue.pop_front() {
        walked += 1;
        if walked > MAX_WALK {
            break;
        }
        let space = match known_room(&mut conn, &current).await? {
            Some(room) => {
                let space = space_room(&state.caches, &mut conn, &room).await?;
                if !may_preview(&mut conn, &space, &room, Some(user_id)).await? {
                    continue;
                }
                space
            }
            None if asked < MAX_REMOTE => {
                asked += 1;
                match remote_space_room(&state, &current, &via, suggested_only).await {
                    Some(space) => space,
                    None => continue,
                }
            }
            None => continue,
        };
        if query.max_depth.is_none_or(|max_depth| depth < max_depth) {
            for (child, suggested, via) in ordered_children(&space) {
                if (!suggested_only || suggested) && seen.insert(child.clone()) {
                    queue.push_back((child, depth + 1, via));
                }
            }
        }
        shown += 1;
        if shown <= offset {
            continue;
        }
        if rooms.len() == limit {
            more = true;
            break;
        }
        rooms.push(space.summary);
    }
    let mut response = json!({ "rooms": rooms });
    if more {
        response["next_batch"] = json!(page_token(offset + limit, query.max_depth, suggested_only));
    }
    Ok(Json(response))
}
