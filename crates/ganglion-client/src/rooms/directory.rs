//! Room aliases (`/directory/room/{roomAlias}`, `/rooms/{roomId}/aliases`) and the published
//! room directory (`/publicRooms`).

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixQuery, MatrixResult, lenient};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::access::{self, HistoryVisibility};
use crate::ClientState;
use ganglion_events::ruma::{OwnedServerName, ServerName};
use ganglion_rpc::{DeleteAlias, SetAlias};
use ganglion_state::directory::{self, DirectorySearch};
use ganglion_storage::rooms as room_store;
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

#[derive(Deserialize)]
pub(crate) struct PublicRoomsQuery {
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    limit: Option<u64>,
    since: Option<String>,
    server: Option<String>,
}

/// `GET /publicRooms`: ours, or with `server` another server's (asked over federation).
pub(crate) async fn public_rooms(
    State(state): State<ClientState>,
    MatrixQuery(query): MatrixQuery<PublicRoomsQuery>,
) -> MatrixResult<Json<Value>> {
    let search = DirectorySearch { limit: query.limit, since: query.since, filter: Default::default() };
    if let Some(server) = remote(&state, query.server.as_deref())? {
        let mut path = String::from("/_matrix/federation/v1/publicRooms");
        let mut separator = '?';
        if let Some(limit) = search.limit {
            path.push_str(&format!("{separator}limit={limit}"));
            separator = '&';
        }
        if let Some(since) = &search.since {
            path.push_str(&format!("{separator}since={}", ganglion_federation::client::encode(since)));
        }
        return state.federation.client.get(&server, &path).await.map(Json).map_err(directory_error);
    }
    let mut conn = state.db.conn().await?;
    Ok(Json(directory::public_rooms_page(&state.caches, &mut conn, search).await?))
}

#[derive(Deserialize)]
pub(crate) struct ServerQuery {
    server: Option<String>,
}

/// `POST /publicRooms`: the same list, with a search term and room types.
pub(crate) async fn search_public_rooms(
    State(state): State<ClientState>,
    Auth(_session): Auth,
    MatrixQuery(query): MatrixQuery<ServerQuery>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    if let Some(server) = remote(&state, query.server.as_deref())? {
        let path = "/_matrix/federation/v1/publicRooms";
        return state
            .federation
            .client
            .request(http::Method::POST, &server, path, Some(&Value::Object(body)))
            .await
            .map(Json)
            .map_err(directory_error);
    }
    let search: DirectorySearch = access::from_object(body)?;
    let mut conn = state.db.conn().await?;
    Ok(Json(directory::public_rooms_page(&state.caches, &mut conn, search).await?))
}

/// A server that cannot be reached has no directory to show: 404, as for a room or media of a
/// server that does not exist. Other failures keep their class.
fn directory_error(error: ganglion_federation::FederationError) -> MatrixError {
    match error {
        ganglion_federation::FederationError::Unreachable { destination, .. } => {
            MatrixError::not_found(format!("{destination} cannot be reached"))
        }
        error => error.into(),
    }
}

/// The other server whose directory `server` names, if it is not this one.
fn remote(state: &ClientState, server: Option<&str>) -> MatrixResult<Option<OwnedServerName>> {
    match server {
        Some(server) if server != state.config.server_name => ServerName::parse(server)
            .map(Some)
            .map_err(|_| MatrixError::invalid_param(format!("{server} is not a server name"))),
        _ => Ok(None),
    }
}
