//! Queries: the server's version, a local user's profile, and where to reach this server.

use axum::{Json, extract::State};
use ganglion_events::ruma::{RoomAliasId, UserId};
use ganglion_http::{MatrixError, MatrixQuery, MatrixResult};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use ganglion_state::directory::{self, DirectorySearch};

use crate::{FederationState, Signed};

/// `GET /_matrix/federation/v1/version` (unauthenticated).
pub(crate) async fn version() -> Json<Value> {
    Json(json!({ "server": { "name": "Ganglion", "version": env!("CARGO_PKG_VERSION") } }))
}

#[derive(Deserialize)]
pub(crate) struct UserInfoQuery {
    access_token: Option<String>,
}

/// `GET /_matrix/federation/v1/openid/userinfo?access_token=…` (unauthenticated: the token is
/// the proof): the local user an unexpired OpenID token was issued to.
pub(crate) async fn openid_userinfo(
    State(state): State<FederationState>,
    query: MatrixResult<MatrixQuery<UserInfoQuery>>,
) -> MatrixResult<Json<Value>> {
    let unknown = || MatrixError::new(ganglion_types::ErrorClass::UnknownToken, "Unknown or expired token");
    let token = query?.0.access_token.ok_or_else(unknown)?;
    let mut conn = state.db.conn().await?;
    let user_id =
        ganglion_storage::reports::user_of_openid_token(&mut conn, &token, ganglion_storage::now_ms())
            .await?
            .ok_or_else(unknown)?;
    Ok(Json(json!({ "sub": user_id })))
}

#[derive(Deserialize)]
pub(crate) struct ProfileQuery {
    user_id: String,
    #[serde(default)]
    field: Option<String>,
}

/// `GET /_matrix/federation/v1/query/profile?user_id=…[&field=…]`: a local user's profile.
pub(crate) async fn profile(
    State(state): State<FederationState>,
    MatrixQuery(query): MatrixQuery<ProfileQuery>,
    _signed: Signed,
) -> MatrixResult<Json<Value>> {
    let user_id = UserId::parse(&query.user_id)
        .map_err(|_| MatrixError::invalid_param(format!("{:?} is not a user id", query.user_id)))?;
    if user_id.server_name().as_str() != state.config.server_name {
        return Err(MatrixError::invalid_param("The user is not on this server"));
    }
    let fields: &[&str] = match query.field.as_deref() {
        None => &["displayname", "avatar_url"],
        Some("displayname") => &["displayname"],
        Some("avatar_url") => &["avatar_url"],
        Some(other) => return Err(MatrixError::invalid_param(format!("Unknown profile field {other:?}"))),
    };
    let mut conn = state.db.conn().await?;
    let profile = ganglion_storage::accounts::profile_of_user(&mut conn, user_id.as_str())
        .await?
        .ok_or_else(|| MatrixError::not_found("Profile not found"))?;
    let mut answer = Map::new();
    for field in fields {
        let value = match *field {
            "displayname" => profile.displayname.clone(),
            _ => profile.avatar_url.clone(),
        };
        if let Some(value) = value {
            answer.insert((*field).to_owned(), json!(value));
        }
    }
    Ok(Json(Value::Object(answer)))
}

#[derive(Deserialize)]
pub(crate) struct DirectoryQuery {
    room_alias: String,
}

/// `GET /_matrix/federation/v1/query/directory?room_alias=…`: the room of a local alias, and
/// this server as the one to join it through.
pub(crate) async fn directory(
    State(state): State<FederationState>,
    MatrixQuery(query): MatrixQuery<DirectoryQuery>,
    _signed: Signed,
) -> MatrixResult<Json<Value>> {
    let alias = RoomAliasId::parse(&query.room_alias)
        .map_err(|_| MatrixError::invalid_param(format!("{:?} is not a room alias", query.room_alias)))?;
    if alias.server_name().as_str() != state.config.server_name {
        return Err(MatrixError::invalid_param("The alias is not on this server"));
    }
    let mut conn = state.db.conn().await?;
    let room_id = ganglion_storage::rooms::room_id_by_alias(&mut conn, alias.as_str())
        .await?
        .ok_or_else(|| MatrixError::not_found(format!("Room alias {alias} not found")))?;
    Ok(Json(json!({ "room_id": room_id, "servers": [state.config.server_name] })))
}

/// `GET /.well-known/matrix/server`: the delegation, when one is configured.
pub(crate) async fn well_known_server(State(state): State<FederationState>) -> MatrixResult<Json<Value>> {
    match &state.config.federation.well_known_server {
        Some(server) => Ok(Json(json!({ "m.server": server }))),
        None => Err(MatrixError::not_found("This server does not delegate federation")),
    }
}

#[derive(Deserialize)]
pub(crate) struct PublicRoomsQuery {
    #[serde(default, deserialize_with = "ganglion_http::lenient::u64_opt")]
    limit: Option<u64>,
    since: Option<String>,
}

/// `GET /_matrix/federation/v1/publicRooms`: our published rooms, for another server's users.
pub(crate) async fn public_rooms(
    State(state): State<FederationState>,
    MatrixQuery(query): MatrixQuery<PublicRoomsQuery>,
    _signed: Signed,
) -> MatrixResult<Json<Value>> {
    let search = DirectorySearch { limit: query.limit, since: query.since, filter: Default::default() };
    let mut conn = state.db.conn().await?;
    Ok(Json(directory::public_rooms_page(&state.caches, &mut conn, search).await?))
}

/// `POST /_matrix/federation/v1/publicRooms`: the same, with a search term and room types.
pub(crate) async fn search_public_rooms(
    State(state): State<FederationState>,
    signed: Signed,
) -> MatrixResult<Json<Value>> {
    let search: DirectorySearch = serde_json::from_slice(&signed.body)
        .map_err(|error| MatrixError::bad_json(format!("Invalid search: {error}")))?;
    let mut conn = state.db.conn().await?;
    Ok(Json(directory::public_rooms_page(&state.caches, &mut conn, search).await?))
}
