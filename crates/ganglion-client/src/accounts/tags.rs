//! Room tags (`m.tag` room account data): read here, each tag set or removed by the master, so
//! that two devices tagging at once both keep their tag.

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_http::{Auth, MatrixJson, MatrixResult};
use ganglion_rpc::SetRoomTag;
use ganglion_storage::streams as stream_store;
use serde_json::{Map, Value, json};

use super::own_user;
use crate::ClientState;
use crate::rooms::room_id_param;

/// `GET /user/{userId}/rooms/{roomId}/tags`: `{"tags": {}}` for a room never tagged.
pub(crate) async fn tags(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((user_id, room_id)): Path<(String, String)>,
) -> MatrixResult<Json<Value>> {
    let user_id = own_user(&session, &user_id, "tags")?;
    let room_id = room_id_param(&room_id)?;
    let mut conn = state.db.conn().await?;
    let stored =
        stream_store::account_data_content(&mut conn, user_id.as_str(), room_id.as_str(), "m.tag").await?;
    let tags = stored
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|data| data.get("tags").filter(|tags| tags.is_object()).cloned())
        .unwrap_or_else(|| json!({}));
    Ok(Json(json!({ "tags": tags })))
}

/// `PUT /user/{userId}/rooms/{roomId}/tags/{tag}`: the body is the tag's object (`order`).
pub(crate) async fn set_tag(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((user_id, room_id, tag)): Path<(String, String, String)>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    change(&state, &session, (&user_id, &room_id, tag), Some(Value::Object(body))).await
}

/// `DELETE /user/{userId}/rooms/{roomId}/tags/{tag}`: also for a tag the room does not have.
pub(crate) async fn delete_tag(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((user_id, room_id, tag)): Path<(String, String, String)>,
) -> MatrixResult<Json<Value>> {
    change(&state, &session, (&user_id, &room_id, tag), None).await
}

async fn change(
    state: &ClientState,
    session: &ganglion_http::Session,
    (user_id, room_id, tag): (&str, &str, String),
    content: Option<Value>,
) -> MatrixResult<Json<Value>> {
    let user_id = own_user(session, user_id, "tags")?;
    let room_id = room_id_param(room_id)?;
    // The master checks the tag's content (`order` a number): its 400 reaches the client as is.
    state.master.set_room_tag(SetRoomTag { user_id, room_id, tag, content }).await?;
    Ok(Json(json!({})))
}
