//! Stored sync filters. The filter is checked for the spec's shape here and stored as sent;
//! the sync role interprets it.

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixResult};
use ganglion_storage::accounts as account_store;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::own_user;
use crate::ClientState;
use ganglion_rpc::CreateFilter;

// The shape of a filter, from the spec's `Filter` schema. Unknown keys are allowed; known keys
// must have the right types. Deserialized only to check that, so the fields are never read.

#[allow(dead_code)]
#[derive(Deserialize)]
struct FilterShape {
    event_fields: Option<Vec<String>>,
    event_format: Option<EventFormat>,
    presence: Option<EventFilterShape>,
    account_data: Option<EventFilterShape>,
    room: Option<RoomFilterShape>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum EventFormat {
    Client,
    Federation,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct EventFilterShape {
    limit: Option<u64>,
    types: Option<Vec<String>>,
    not_types: Option<Vec<String>>,
    senders: Option<Vec<String>>,
    not_senders: Option<Vec<String>>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct RoomFilterShape {
    rooms: Option<Vec<String>>,
    not_rooms: Option<Vec<String>>,
    include_leave: Option<bool>,
    timeline: Option<RoomEventFilterShape>,
    state: Option<RoomEventFilterShape>,
    ephemeral: Option<RoomEventFilterShape>,
    account_data: Option<RoomEventFilterShape>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct RoomEventFilterShape {
    limit: Option<u64>,
    types: Option<Vec<String>>,
    not_types: Option<Vec<String>>,
    senders: Option<Vec<String>>,
    not_senders: Option<Vec<String>>,
    rooms: Option<Vec<String>>,
    not_rooms: Option<Vec<String>>,
    contains_url: Option<bool>,
    lazy_load_members: Option<bool>,
    include_redundant_members: Option<bool>,
    unread_thread_notifications: Option<bool>,
}

/// Checks that a filter body has the spec's shape: `M_BAD_JSON` otherwise.
pub(crate) fn check_filter_shape(filter: &Map<String, Value>) -> MatrixResult<()> {
    FilterShape::deserialize(&Value::Object(filter.clone()))
        .map(|_| ())
        .map_err(|error| MatrixError::bad_json(format!("Invalid filter: {error}")))
}

/// `POST /user/{userId}/filter`.
pub(crate) async fn create_filter(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(user_id): Path<String>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let user_id = own_user(&session, &user_id, "filters")?;
    check_filter_shape(&body)?;
    let filter_id = state.master.create_filter(CreateFilter { user_id, filter: Value::Object(body) }).await?;
    Ok(Json(json!({ "filter_id": filter_id })))
}

/// `GET /user/{userId}/filter/{filterId}`.
pub(crate) async fn filter(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((user_id, filter_id)): Path<(String, String)>,
) -> MatrixResult<Json<Value>> {
    let user_id = own_user(&session, &user_id, "filters")?;
    let unknown = || MatrixError::not_found("Unknown filter");
    // Filter ids are the numbers we hand out; anything else names no filter.
    let filter_id: i64 = filter_id.parse().map_err(|_| unknown())?;
    let mut conn = state.db.conn().await?;
    let text =
        account_store::filter_by_id(&mut conn, user_id.as_str(), filter_id).await?.ok_or_else(unknown)?;
    let filter = serde_json::from_str(&text)
        .map_err(|error| MatrixError::internal(format!("stored filter is not JSON: {error}")))?;
    Ok(Json(filter))
}
