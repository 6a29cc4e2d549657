//! A room's visibility in the published room directory.

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_http::{Auth, MatrixJson, MatrixResult};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::access;
use crate::ClientState;
use ganglion_rpc::SetRoomVisibility;

/// `GET /directory/list/room/{roomId}`.
pub(crate) async fn visibility(
    State(state): State<ClientState>,
    Path(room_id): Path<String>,
) -> MatrixResult<Json<Value>> {
    access::room_id(&room_id)?;
    let mut conn = state.db.conn().await?;
    let room = access::room(&mut conn, &room_id).await?;
    let visibility = if room.is_public { "public" } else { "private" };
    Ok(Json(json!({ "visibility": visibility })))
}

#[derive(Deserialize)]
struct VisibilityBody {
    visibility: Option<String>,
}

/// `PUT /directory/list/room/{roomId}`: `visibility` defaults to `public`.
pub(crate) async fn set_visibility(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: VisibilityBody = access::from_object(body)?;
    let room_id = access::room_id(&room_id)?;
    let visibility =
        access::one_of(body.visibility.as_deref().unwrap_or("public"), &["public", "private"], "visibility")?;
    let request = SetRoomVisibility { user_id: session.user_id, room_id, public: visibility == "public" };
    state.master.set_room_visibility(request).await?;
    Ok(Json(json!({})))
}
