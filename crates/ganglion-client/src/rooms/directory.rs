//! Room aliases (`/directory/room/{roomAlias}`, `/rooms/{roomId}/aliases`) and the published
//! room directory (`/publicRooms`).

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixQuery, MatrixResult, lenient};
use ganglion_storage::{Conn, rooms as room_store, rooms::RoomRow};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::access::{self, HistoryVisibility};
use crate::ClientState;
use ganglion_rpc::{DeleteAlias, SetAlias};
use ganglion_types::ErrorClass;

/// `GET /directory/room/{roomAlias}`: a local alias from the database, another server's from
/// that server (`/query/directory`).
pub(crate) async fn alias(
    State(state): State<ClientState>,
    Path(alias): Path<String>,
) -> MatrixResult<Json<Value>> {
    let alias = access::room_alias(&alias)?;
    if alias.server_name().as_str() != state.config.server_name {
        let answer = state.federation.client.room_alias(&alias).await?;
        let room_id = answer.get("room_id").and_then(Value::as_str).map(str::to_owned);
        let servers = answer.get("servers").cloned().unwrap_or_else(|| json!([]));
        let room_id = room_id.ok_or_else(|| {
            MatrixError::new(ErrorClass::BadGateway, "The alias's server answered no room id")
        })?;
        return Ok(Json(json!({ "room_id": room_id, "servers": servers })));
    }
    let mut conn = state.db.conn().await?;
    let room_id = room_store::room_id_by_alias(&mut conn, alias.as_str()).await?;
    let room_id = room_id.ok_or_else(|| MatrixError::not_found(format!("Room alias {alias} not found")))?;
    Ok(Json(json!({ "room_id": room_id, "servers": [state.config.server_name] })))
}

#[derive(Deserialize)]
struct SetAliasBody {
    room_id: String,
}

/// `PUT /directory/room/{roomAlias}`: 409 when the alias is taken.
pub(crate) async fn set_alias(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(alias): Path<String>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: SetAliasBody = access::from_object(body)?;
    let alias = access::room_alias(&alias)?;
    let room_id = access::room_id(&body.room_id)?;
    state.master.set_alias(SetAlias { user_id: session.user_id, alias, room_id }).await?;
    Ok(Json(json!({})))
}

/// `DELETE /directory/room/{roomAlias}`.
pub(crate) async fn delete_alias(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(alias): Path<String>,
) -> MatrixResult<Json<Value>> {
    let alias = access::room_alias(&alias)?;
    state.master.delete_alias(DeleteAlias { user_id: session.user_id, alias }).await?;
    Ok(Json(json!({})))
}

/// `GET /rooms/{roomId}/aliases`: for members, or anyone when the room is world-readable.
pub(crate) async fn room_aliases(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
) -> MatrixResult<Json<Value>> {
    access::room_id(&room_id)?;
    let mut conn = state.db.conn().await?;
    let room = access::room(&mut conn, &room_id).await?;
    let joined = access::membership(&mut conn, &room, session.user_id.as_str())
        .await?
        .is_some_and(|m| m.membership == "join");
    let snapshot = access::snapshot(&state, &mut conn, room.current_snapshot_nid).await?;
    if !joined
        && access::history_visibility(&state, &mut conn, &snapshot).await? != HistoryVisibility::WorldReadable
    {
        return Err(MatrixError::forbidden("You are not a member of the room"));
    }
    let aliases = room_store::aliases_of_room(&mut conn, &room.room_id).await?;
    Ok(Json(json!({ "aliases": aliases })))
}

/// Published rooms per page when the client names no limit.
const DEFAULT_PUBLIC_ROOMS_LIMIT: u64 = 100;
const MAX_PUBLIC_ROOMS_LIMIT: u64 = 500;

#[derive(Deserialize)]
pub(crate) struct PublicRoomsQuery {
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    limit: Option<u64>,
    since: Option<String>,
    server: Option<String>,
}

/// `GET /publicRooms`.
pub(crate) async fn public_rooms(
    State(state): State<ClientState>,
    MatrixQuery(query): MatrixQuery<PublicRoomsQuery>,
) -> MatrixResult<Json<Value>> {
    check_server(&state, query.server.as_deref())?;
    let search =
        PublicRoomsSearch { limit: query.limit, since: query.since, filter: PublicRoomsFilter::default() };
    Ok(Json(published_rooms(&state, search).await?))
}

#[derive(Deserialize)]
pub(crate) struct ServerQuery {
    server: Option<String>,
}

#[derive(Default, Deserialize)]
struct PublicRoomsFilter {
    generic_search_term: Option<String>,
    room_types: Option<Vec<Option<String>>>,
}

#[derive(Deserialize)]
struct PublicRoomsSearch {
    limit: Option<u64>,
    since: Option<String>,
    #[serde(default)]
    filter: PublicRoomsFilter,
}

/// `POST /publicRooms`: the same list, with a search term and room types.
pub(crate) async fn search_public_rooms(
    State(state): State<ClientState>,
    Auth(_session): Auth,
    MatrixQuery(query): MatrixQuery<ServerQuery>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    check_server(&state, query.server.as_deref())?;
    let search: PublicRoomsSearch = access::from_object(body)?;
    Ok(Json(published_rooms(&state, search).await?))
}

/// Only this server's directory is served: there is no federation yet.
fn check_server(state: &ClientState, server: Option<&str>) -> MatrixResult<()> {
    match server {
        Some(server) if server != state.config.server_name => Err(MatrixError::invalid_param(format!(
            "Cannot list the rooms of {server}: federation is not supported"
        ))),
        _ => Ok(()),
    }
}

/// A `since` token of `/publicRooms`: the offset into the directory, newest room first.
pub(crate) fn directory_offset(token: &str) -> Option<i64> {
    let digits = token.strip_prefix('o')?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn directory_token(offset: i64) -> String {
    format!("o{offset}")
}

/// One page of the directory. Without a filter `since` is a plain offset; with one, rooms are
/// read in batches from the offset and `next_batch` is the offset after the last room read, so
/// the next page continues where this one stopped.
async fn published_rooms(state: &ClientState, search: PublicRoomsSearch) -> MatrixResult<Value> {
    let limit = search.limit.unwrap_or(DEFAULT_PUBLIC_ROOMS_LIMIT).clamp(1, MAX_PUBLIC_ROOMS_LIMIT) as i64;
    let start = match search.since.as_deref() {
        Some(token) => {
            directory_offset(token).ok_or_else(|| MatrixError::invalid_param("Invalid `since` token"))?
        }
        None => 0,
    };
    let term =
        search.filter.generic_search_term.as_deref().map(str::to_lowercase).filter(|term| !term.is_empty());
    let filtered = term.is_some() || search.filter.room_types.is_some();
    let mut conn = state.db.conn().await?;
    let mut chunk = Vec::new();
    let mut offset = start;
    let mut next_batch = None;
    // A filter may skip many rooms, so read more than a page at a time.
    let batch = if filtered { limit.max(100) } else { limit };
    'pages: loop {
        let room_ids = room_store::public_room_ids(&mut conn, batch, offset).await?;
        let exhausted = (room_ids.len() as i64) < batch;
        for room_id in room_ids {
            offset += 1;
            let Some(room) = room_store::room_by_id(&mut conn, &room_id).await? else { continue };
            let summary = summary_of(state, &mut conn, &room).await?;
            if summary.matches(term.as_deref(), search.filter.room_types.as_deref()) {
                chunk.push(summary.to_json(&room.room_id));
                if chunk.len() as i64 == limit {
                    next_batch = Some(offset);
                    break 'pages;
                }
            }
        }
        if exhausted {
            break;
        }
    }
    let mut response = Map::new();
    response.insert("chunk".into(), Value::Array(chunk));
    if let Some(next) = next_batch {
        response.insert("next_batch".into(), json!(directory_token(next)));
    }
    // Going back needs the offsets of earlier filtered pages, which only the client has seen.
    if start > 0 && !filtered {
        response.insert("prev_batch".into(), json!(directory_token((start - limit).max(0))));
    }
    response
        .insert("total_room_count_estimate".into(), json!(room_store::public_room_count(&mut conn).await?));
    Ok(Value::Object(response))
}

/// What the directory shows of a room, from its current state.
struct RoomSummary {
    name: Option<String>,
    topic: Option<String>,
    canonical_alias: Option<String>,
    avatar_url: Option<String>,
    join_rule: Option<String>,
    room_type: Option<String>,
    world_readable: bool,
    guest_can_join: bool,
    num_joined_members: i64,
}

async fn summary_of(state: &ClientState, conn: &mut Conn, room: &RoomRow) -> MatrixResult<RoomSummary> {
    let snapshot = access::snapshot(state, conn, room.current_snapshot_nid).await?;
    let name = access::state_string(state, conn, &snapshot, "m.room.name", "", "name").await?;
    let canonical_alias =
        access::state_string(state, conn, &snapshot, "m.room.canonical_alias", "", "alias").await?;
    let avatar_url = access::state_string(state, conn, &snapshot, "m.room.avatar", "", "url").await?;
    let join_rule =
        access::state_string(state, conn, &snapshot, "m.room.join_rules", "", "join_rule").await?;
    let room_type = access::state_string(state, conn, &snapshot, "m.room.create", "", "type").await?;
    let guest_access =
        access::state_string(state, conn, &snapshot, "m.room.guest_access", "", "guest_access").await?;
    let topic = match state.caches.state_event(conn, &snapshot, "m.room.topic", "").await? {
        Some(event) => plain_topic(&state.caches.visible_content(conn, &event).await?),
        None => None,
    };
    Ok(RoomSummary {
        name: name.filter(|name| !name.is_empty()),
        topic,
        canonical_alias,
        avatar_url: avatar_url.filter(|url| !url.is_empty()),
        join_rule,
        room_type,
        world_readable: access::history_visibility(state, conn, &snapshot).await?
            == HistoryVisibility::WorldReadable,
        guest_can_join: guest_access.as_deref() == Some("can_join"),
        num_joined_members: room_store::joined_member_count(conn, room.room_nid).await?,
    })
}

/// The plain-text topic: the `text/plain` entry of `m.topic`, else the `topic` field.
pub(crate) fn plain_topic(content: &Value) -> Option<String> {
    let rich = content.get("m.topic").and_then(Value::as_array).and_then(|entries| {
        entries.iter().find_map(|entry| {
            let plain = entry.get("mimetype").and_then(Value::as_str).is_none_or(|mime| mime == "text/plain");
            plain.then(|| entry.get("body").and_then(Value::as_str)).flatten()
        })
    });
    rich.or_else(|| content.get("topic").and_then(Value::as_str)).map(str::to_owned)
}

impl RoomSummary {
    /// Whether the room matches the search term (in name, topic or alias, case-insensitive) and
    /// the room types (`None` in the list stands for rooms without a type).
    fn matches(&self, term: Option<&str>, room_types: Option<&[Option<String>]>) -> bool {
        let type_ok = room_types.is_none_or(|types| types.contains(&self.room_type));
        let term_ok = term.is_none_or(|term| {
            [&self.name, &self.topic, &self.canonical_alias]
                .into_iter()
                .flatten()
                .any(|text| text.to_lowercase().contains(term))
        });
        type_ok && term_ok
    }

    fn to_json(&self, room_id: &str) -> Value {
        let mut entry = Map::new();
        entry.insert("room_id".into(), json!(room_id));
        entry.insert("num_joined_members".into(), json!(self.num_joined_members));
        entry.insert("world_readable".into(), json!(self.world_readable));
        entry.insert("guest_can_join".into(), json!(self.guest_can_join));
        for (key, value) in [
            ("name", &self.name),
            ("topic", &self.topic),
            ("canonical_alias", &self.canonical_alias),
            ("avatar_url", &self.avatar_url),
            ("join_rule", &self.join_rule),
            ("room_type", &self.room_type),
        ] {
            if let Some(value) = value {
                entry.insert(key.into(), json!(value));
            }
        }
        Value::Object(entry)
    }
}
