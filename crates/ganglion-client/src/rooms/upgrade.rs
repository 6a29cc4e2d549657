//! `POST /rooms/{roomId}/upgrade`: the room replaced by a new one of another version (see the
//! master's `upgrade_room`).

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_events::ruma::{OwnedUserId, RoomVersionId};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixResult};
use ganglion_rpc::UpgradeRoom;
use ganglion_types::ErrorClass;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::access;
use crate::ClientState;

#[derive(Deserialize)]
struct UpgradeBody {
    new_version: String,
    #[serde(default)]
    additional_creators: Vec<String>,
}

pub(crate) async fn upgrade(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: UpgradeBody = access::from_object(body)?;
    let room_id = access::room_id(&room_id)?;
    let unsupported = || {
        MatrixError::new(
            ErrorClass::UnsupportedRoomVersion,
            format!("Room version {:?} is not supported", body.new_version),
        )
    };
    let new_version = RoomVersionId::try_from(body.new_version.as_str()).map_err(|_| unsupported())?;
    if ganglion_events::rules_for(&new_version).is_none() {
        return Err(unsupported());
    }
    let additional_creators = body
        .additional_creators
        .iter()
        .map(|user| access::user_id(user))
        .collect::<MatrixResult<Vec<OwnedUserId>>>()?;
    let request = UpgradeRoom { sender: session.user_id.clone(), room_id, new_version, additional_creators };
    let replacement = state.master.upgrade_room(request).await?;
    Ok(Json(json!({ "replacement_room": replacement })))
}
