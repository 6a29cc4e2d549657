//! Account data, global and per room. Only the owner reads or writes it.

use crate::rooms::room_id_param;
use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixResult, Session};
use ganglion_storage::streams as stream_store;
use ganglion_types::ErrorClass;
use serde_json::{Map, Value};

use super::own_user;
use crate::ClientState;
use ganglion_rpc::SetAccountData;

/// Types the server maintains itself: push rules through `/pushrules`, the fully-read marker
/// through `/read_markers`.
const SERVER_CONTROLLED: &[&str] = &["m.push_rules", "m.fully_read"];

/// The stored content of one account data entry (`room_id` empty for global data), or 404.
async fn content(
    state: &ClientState,
    session: &Session,
    user_id: &str,
    room_id: &str,
    data_type: &str,
) -> MatrixResult<Value> {
    let user_id = own_user(session, user_id, "account data")?;
    let mut conn = state.db.conn().await?;
    let text = stream_store::account_data_content(&mut conn, user_id.as_str(), room_id, data_type).await?;
    let text = text.ok_or_else(|| MatrixError::not_found("Account data not found"))?;
    serde_json::from_str(&text)
        .map_err(|error| MatrixError::internal(format!("stored account data is not JSON: {error}")))
}

/// Refuses types the server maintains, with the spec's 405 `M_BAD_JSON`.
fn check_settable(data_type: &str) -> MatrixResult<()> {
    if SERVER_CONTROLLED.contains(&data_type) {
        return Err(MatrixError::new(
            ErrorClass::ServerManaged,
            format!("Cannot set {data_type} through this API"),
        ));
    }
    Ok(())
}

/// `GET /user/{userId}/account_data/{type}`. `m.push_rules` is the user's rules whether they
/// changed them or not, as `/sync` gives them.
pub(crate) async fn global(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((user_id, data_type)): Path<(String, String)>,
) -> MatrixResult<Json<Value>> {
    if data_type == "m.push_rules" {
        own_user(&session, &user_id, "account data")?;
        return Ok(Json(serde_json::json!({ "global": super::push_rules::global(&state, &session).await? })));
    }
    Ok(Json(content(&state, &session, &user_id, "", &data_type).await?))
}

/// `PUT /user/{userId}/account_data/{type}`.
pub(crate) async fn set_global(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((user_id, data_type)): Path<(String, String)>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let user_id = own_user(&session, &user_id, "account data")?;
    check_settable(&data_type)?;
    let request = SetAccountData { user_id, room_id: None, data_type, content: Value::Object(body) };
    state.master.set_account_data(request).await?;
    Ok(Json(Value::Object(Map::new())))
}

/// `GET /user/{userId}/rooms/{roomId}/account_data/{type}`.
pub(crate) async fn in_room(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((user_id, room_id, data_type)): Path<(String, String, String)>,
) -> MatrixResult<Json<Value>> {
    let room_id = room_id_param(&room_id)?;
    Ok(Json(content(&state, &session, &user_id, room_id.as_str(), &data_type).await?))
}

/// `PUT /user/{userId}/rooms/{roomId}/account_data/{type}`.
pub(crate) async fn set_in_room(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((user_id, room_id, data_type)): Path<(String, String, String)>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let user_id = own_user(&session, &user_id, "account data")?;
    let room_id = room_id_param(&room_id)?;
    check_settable(&data_type)?;
    let request = SetAccountData { user_id, room_id: Some(room_id), data_type, content: Value::Object(body) };
    state.master.set_account_data(request).await?;
    Ok(Json(Value::Object(Map::new())))
}
