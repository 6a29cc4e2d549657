//! `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`: another server invites one of our
//! users. The event is checked, countersigned with our key and stored with the stripped state
//! it came with, so the invitee's sync shows the invite.

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_events::ruma::{CanonicalJsonValue, RoomVersionId, UserId};
use ganglion_federation::pdu::check_pdu;
use ganglion_http::{MatrixError, MatrixResult};
use ganglion_rpc::StoreInvite;
use ganglion_types::ErrorClass;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{FederationState, Signed};

#[derive(Deserialize)]
struct InviteBody {
    room_version: String,
    event: Value,
    #[serde(default)]
    invite_room_state: Vec<Value>,
}

pub(crate) async fn invite(
    State(state): State<FederationState>,
    Path((room_id, event_id)): Path<(String, String)>,
    signed: Signed,
) -> MatrixResult<Json<Value>> {
    let body: InviteBody = serde_json::from_slice(&signed.body)
        .map_err(|error| MatrixError::bad_json(format!("Invalid invite: {error}")))?;
    let version = RoomVersionId::try_from(body.room_version.as_str())
        .ok()
        .filter(|version| ganglion_events::rules_for(version).is_some())
        .ok_or_else(|| {
            MatrixError::new(
                ErrorClass::IncompatibleRoomVersion { room_version: body.room_version.clone() },
                format!("This server does not support room version {}", body.room_version),
            )
        })?;
    let rules = ganglion_events::rules_for(&version).ok_or_else(|| MatrixError::internal("no rules"))?;
    let checked = check_pdu(&state.federation.keyring, &version, &body.event).await?;
    if checked.event_id.as_str() != event_id || checked.room_id.as_str() != room_id {
        return Err(MatrixError::bad_json("The event is not the one the path names"));
    }
    let field = |name: &str| body.event.get(name).and_then(Value::as_str).unwrap_or_default();
    let sender =
        UserId::parse(field("sender")).map_err(|_| MatrixError::bad_json("sender is not a user id"))?;
    if sender.server_name() != signed.origin {
        return Err(MatrixError::forbidden("The inviter is not a user of the requesting server"));
    }
    if field("type") != "m.room.member" || body.event["content"]["membership"] != "invite" {
        return Err(MatrixError::bad_json("Not an invite"));
    }
    let target =
        UserId::parse(field("state_key")).map_err(|_| MatrixError::bad_json("state_key is not a user id"))?;
    let known = if target.server_name().as_str() == state.config.server_name {
        let mut conn = state.db.conn().await?;
        ganglion_storage::accounts::user_exists(&mut conn, target.as_str()).await?
    } else {
        false
    };
    if !known {
        return Err(MatrixError::not_found("The invitee is not a user of this server"));
    }
    if checked.redacted {
        return Err(MatrixError::bad_json("The event's content does not match its hash"));
    }
    let mut object = checked.object;
    ganglion_events::ruma::signatures::sign_event(
        &state.config.server_name,
        &state.key.key_pair,
        &mut object,
        &rules.redaction,
    )
    .map_err(|error| MatrixError::internal(format!("countersigning failed: {error}")))?;
    let json = CanonicalJsonValue::Object(object.clone()).to_string();
    state
        .master
        .store_invite(StoreInvite {
            room_id: checked.room_id,
            room_version: version,
            event: (checked.event_id, json),
            invite_room_state: Value::Array(body.invite_room_state),
        })
        .await?;
    Ok(Json(json!({ "event": object })))
}
