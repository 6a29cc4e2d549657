//! Server-side key backup (`/room_keys`): each user's backup versions and the room keys stored
//! in them, encrypted for the user's own clients. Bodies are checked by `ganglion_keys`; reads
//! come from the database, and writes go to the master, which has committed them when it answers.
//!
//! A backup version is the decimal number the master hands out. Any other string names no
//! version and answers 404, as a version that never existed does.

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixQuery, MatrixResult, Session};
use ganglion_keys::{
    RoomKey, check_backup_version, check_id_length, check_key_backup_data, check_room_keys,
    check_room_sessions,
};
use ganglion_rpc::{
    CreateBackupVersion, DeleteBackupKeys, DeleteBackupVersion, PutBackupKeys, RoomKeysUpdate,
    UpdateBackupVersion,
};
use ganglion_storage::{
    Conn,
    key_backup::{self as store, BackupKeyRow, BackupVersionRow},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{ClientState, rooms::room_id_param};

fn unknown_version() -> MatrixError {
    MatrixError::not_found("Unknown backup version")
}

/// The number of the version `text` names: only the exact decimal form the master hands out.
fn version_number(text: &str) -> MatrixResult<i64> {
    match text.parse::<i64>() {
        Ok(version) if version > 0 && version.to_string() == text => Ok(version),
        _ => Err(unknown_version()),
    }
}

/// The `version` query parameter of the `/room_keys/keys` endpoints, which the spec requires.
#[derive(Deserialize)]
pub(crate) struct VersionQuery {
    version: Option<String>,
}

impl VersionQuery {
    fn number(&self) -> MatrixResult<i64> {
        let text = self
            .version
            .as_deref()
            .ok_or_else(|| MatrixError::missing_param("The `version` query parameter is required"))?;
        version_number(text)
    }
}

fn stored_json(text: &str, what: &str) -> MatrixResult<Value> {
    serde_json::from_str(text)
        .map_err(|error| MatrixError::internal(format!("stored {what} is not JSON: {error}")))
}

/// A version as `GET /room_keys/version` answers it.
async fn version_info(
    conn: &mut Conn,
    session: &Session,
    row: BackupVersionRow,
) -> MatrixResult<Json<Value>> {
    let count = store::backup_key_count(conn, session.user_id.as_str(), row.version).await?;
    Ok(Json(json!({
        "algorithm": row.algorithm,
        "auth_data": stored_json(&row.auth_data_json, "auth_data")?,
        "count": count,
        "etag": row.etag.to_string(),
        "version": row.version.to_string(),
    })))
}

/// `POST /room_keys/version`.
pub(crate) async fn create_version(
    State(state): State<ClientState>,
    Auth(session): Auth,
    MatrixJson(body): MatrixJson<Value>,
) -> MatrixResult<Json<Value>> {
    let checked = check_backup_version(&body)?;
    let request = CreateBackupVersion {
        user_id: session.user_id,
        algorithm: checked.algorithm,
        auth_data: checked.auth_data,
    };
    let version = state.master.create_backup_version(request).await?;
    Ok(Json(json!({ "version": version.to_string() })))
}

/// `GET /room_keys/version`: the newest version that was not deleted.
pub(crate) async fn current_version(
    State(state): State<ClientState>,
    Auth(session): Auth,
) -> MatrixResult<Json<Value>> {
    let mut conn = state.db.conn().await?;
    let row = store::latest_backup_version(&mut conn, session.user_id.as_str()).await?;
    let row = row.ok_or_else(|| MatrixError::not_found("No current backup version"))?;
    version_info(&mut conn, &session, row).await
}

/// `GET /room_keys/version/{version}`.
pub(crate) async fn version(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(version): Path<String>,
) -> MatrixResult<Json<Value>> {
    let version = version_number(&version)?;
    let mut conn = state.db.conn().await?;
    let row = store::backup_version(&mut conn, session.user_id.as_str(), version).await?;
    version_info(&mut conn, &session, row.ok_or_else(unknown_version)?).await
}

/// `PUT /room_keys/version/{version}`: only `auth_data` changes. A `version` in the body must
/// be the path's; the algorithm must be the version's (the master checks that).
pub(crate) async fn update_version(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(version): Path<String>,
    MatrixJson(body): MatrixJson<Value>,
) -> MatrixResult<Json<Value>> {
    let checked = check_backup_version(&body)?;
    match body.get("version") {
        None => {}
        Some(Value::String(in_body)) if *in_body == version => {}
        Some(Value::String(_)) => return Err(MatrixError::invalid_param("Version in body does not match")),
        Some(_) => return Err(MatrixError::bad_json("body.version: must be a string")),
    }
    let request = UpdateBackupVersion {
        user_id: session.user_id,
        version: version_number(&version)?,
        algorithm: checked.algorithm,
        auth_data: checked.auth_data,
    };
    state.master.update_backup_version(request).await?;
    Ok(Json(json!({})))
}

/// `DELETE /room_keys/version/{version}`: the version and every key in it.
pub(crate) async fn delete_version(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(version): Path<String>,
) -> MatrixResult<Json<Value>> {
    let request = DeleteBackupVersion { user_id: session.user_id, version: version_number(&version)? };
    state.master.delete_backup_version(request).await?;
    Ok(Json(json!({})))
}

/// The number of the version the query names, which must exist.
async fn existing_version(conn: &mut Conn, session: &Session, query: &VersionQuery) -> MatrixResult<i64> {
    let version = query.number()?;
    store::backup_version(conn, session.user_id.as_str(), version).await?.ok_or_else(unknown_version)?;
    Ok(version)
}

/// A stored key as the spec's `KeyBackupData`.
fn key_backup_data(row: &BackupKeyRow) -> MatrixResult<Value> {
    Ok(json!({
        "first_message_index": row.first_message_index,
        "forwarded_count": row.forwarded_count,
        "is_verified": row.is_verified,
        "session_data": stored_json(&row.session_data_json, "session_data")?,
    }))
}

/// One room's keys as the spec's `RoomKeyBackup`: `{"sessions": {session_id: KeyBackupData}}`.
fn room_key_backup(rows: &[BackupKeyRow]) -> MatrixResult<Value> {
    let mut sessions = Map::new();
    for row in rows {
        sessions.insert(row.session_id.clone(), key_backup_data(row)?);
    }
    Ok(json!({ "sessions": sessions }))
}

/// `GET /room_keys/keys`: every key of the version, by room.
pub(crate) async fn keys(
    State(state): State<ClientState>,
    Auth(session): Auth,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> MatrixResult<Json<Value>> {
    let mut conn = state.db.conn().await?;
    let version = existing_version(&mut conn, &session, &query).await?;
    let rows = store::backup_keys_of_version(&mut conn, session.user_id.as_str(), version).await?;
    let mut rooms = Map::new();
    // Rows come ordered by room.
    for room in rows.chunk_by(|a, b| a.room_id == b.room_id) {
        rooms.insert(room[0].room_id.clone(), room_key_backup(room)?);
    }
    Ok(Json(json!({ "rooms": rooms })))
}

/// `GET /room_keys/keys/{roomId}`: `{"sessions": {}}` when the room has none.
pub(crate) async fn room_keys(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> MatrixResult<Json<Value>> {
    let room_id = room_id_param(&room_id)?;
    let mut conn = state.db.conn().await?;
    let version = existing_version(&mut conn, &session, &query).await?;
    let user_id = session.user_id.as_str();
    let rows = store::backup_keys_of_room(&mut conn, user_id, version, room_id.as_str()).await?;
    Ok(Json(room_key_backup(&rows)?))
}

/// `GET /room_keys/keys/{roomId}/{sessionId}`: 404 when the session has no key.
pub(crate) async fn session_key(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((room_id, session_id)): Path<(String, String)>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> MatrixResult<Json<Value>> {
    let room_id = room_id_param(&room_id)?;
    let mut conn = state.db.conn().await?;
    let version = existing_version(&mut conn, &session, &query).await?;
    let user_id = session.user_id.as_str();
    let row = store::backup_key(&mut conn, user_id, version, room_id.as_str(), &session_id).await?;
    Ok(Json(key_backup_data(&row.ok_or_else(|| MatrixError::not_found("Key not found"))?)?))
}

/// Has the master store `keys` in `version` (the current one), keeping better stored keys.
async fn store_keys(
    state: &ClientState,
    session: Session,
    version: i64,
    keys: Vec<RoomKey>,
) -> MatrixResult<Json<Value>> {
    let request = PutBackupKeys { user_id: session.user_id, version, keys };
    Ok(room_keys_update(state.master.put_backup_keys(request).await?))
}

/// The spec's `RoomKeysUpdateResponse`.
fn room_keys_update(update: RoomKeysUpdate) -> Json<Value> {
    Json(json!({ "etag": update.etag.to_string(), "count": update.count }))
}

/// `PUT /room_keys/keys`: `{"rooms": {room_id: {"sessions": {session_id: KeyBackupData}}}}`.
pub(crate) async fn put_keys(
    State(state): State<ClientState>,
    Auth(session): Auth,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
    MatrixJson(body): MatrixJson<Value>,
) -> MatrixResult<Json<Value>> {
    let version = query.number()?;
    let keys = check_room_keys(&body)?;
    store_keys(&state, session, version, keys).await
}

/// `PUT /room_keys/keys/{roomId}`: `{"sessions": {session_id: KeyBackupData}}`.
pub(crate) async fn put_room_keys(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
    MatrixJson(body): MatrixJson<Value>,
) -> MatrixResult<Json<Value>> {
    let room_id = room_id_param(&room_id)?;
    let version = query.number()?;
    let keys = check_room_sessions(&room_id, &body)?;
    store_keys(&state, session, version, keys).await
}

/// `PUT /room_keys/keys/{roomId}/{sessionId}`: one `KeyBackupData`.
pub(crate) async fn put_session_key(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((room_id, session_id)): Path<(String, String)>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
    MatrixJson(body): MatrixJson<Value>,
) -> MatrixResult<Json<Value>> {
    let room_id = room_id_param(&room_id)?;
    check_id_length("sessionId", &session_id)?;
    let version = query.number()?;
    let key = check_key_backup_data(&body)?;
    store_keys(&state, session, version, vec![RoomKey { room_id, session_id, key }]).await
}

/// Has the master delete keys from `version`: any version that exists, current or not.
async fn remove_keys(state: &ClientState, request: DeleteBackupKeys) -> MatrixResult<Json<Value>> {
    Ok(room_keys_update(state.master.delete_backup_keys(request).await?))
}

/// `DELETE /room_keys/keys`.
pub(crate) async fn delete_keys(
    State(state): State<ClientState>,
    Auth(session): Auth,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> MatrixResult<Json<Value>> {
    let request = DeleteBackupKeys {
        user_id: session.user_id,
        version: query.number()?,
        room_id: None,
        session_id: None,
    };
    remove_keys(&state, request).await
}

/// `DELETE /room_keys/keys/{roomId}`.
pub(crate) async fn delete_room_keys(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> MatrixResult<Json<Value>> {
    let request = DeleteBackupKeys {
        user_id: session.user_id,
        version: query.number()?,
        room_id: Some(room_id_param(&room_id)?),
        session_id: None,
    };
    remove_keys(&state, request).await
}

/// `DELETE /room_keys/keys/{roomId}/{sessionId}`.
pub(crate) async fn delete_session_key(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((room_id, session_id)): Path<(String, String)>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> MatrixResult<Json<Value>> {
    let request = DeleteBackupKeys {
        user_id: session.user_id,
        version: query.number()?,
        room_id: Some(room_id_param(&room_id)?),
        session_id: Some(session_id),
    };
    remove_keys(&state, request).await
}

#[cfg(test)]
mod tests;
