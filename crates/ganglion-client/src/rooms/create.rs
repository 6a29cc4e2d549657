//! `POST /createRoom`: the body is checked here, before the master is called, so a bad request
//! writes nothing; the master builds the events and checks the rest.

use axum::{Json, extract::State};
use ganglion_config::RateLimitAction;
use ganglion_events::{SUPPORTED_ROOM_VERSIONS, ruma::RoomVersionId};
use ganglion_http::{Auth, MatrixError, MatrixResult};
use ganglion_types::ErrorClass;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::access::{self, RequiredJson};
use crate::ClientState;
use ganglion_rpc::{CreateRoom, CreateRoomRequest, InitialStateEvent, Preset};

#[derive(Deserialize)]
struct CreateRoomBody {
    visibility: Option<String>,
    room_alias_name: Option<String>,
    name: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    invite: Vec<String>,
    room_version: Option<String>,
    creation_content: Option<Map<String, Value>>,
    #[serde(default)]
    initial_state: Vec<InitialStateEvent>,
    preset: Option<Preset>,
    #[serde(default)]
    is_direct: bool,
    power_level_content_override: Option<Map<String, Value>>,
}

pub(crate) async fn create_room(
    State(state): State<ClientState>,
    Auth(session): Auth,
    RequiredJson(body): RequiredJson,
) -> MatrixResult<Json<Value>> {
    // Synapse counts a room creation as a message, and its `invite` list as invites.
    let limiter = state.authenticator.rate_limiter();
    let creator = session.user_id.as_str();
    limiter.check_user(RateLimitAction::Message, creator)?;
    let request = create_room_request(access::from_object(body)?)?;
    for invitee in &request.invite {
        limiter.check_user(RateLimitAction::InvitesPerIssuer, creator)?;
        limiter.check_on_behalf_of(RateLimitAction::InvitesPerUser, invitee.as_str(), creator)?;
    }
    let own_server = state.config.server_name.clone();
    let remote: Vec<_> =
        request.invite.iter().filter(|user| user.server_name().as_str() != own_server).cloned().collect();
    let sender = session.user_id.clone();
    let room_id = state.master.create_room(CreateRoom { sender: session.user_id, request }).await?;
    // The master invited our users; other servers' users are invited through their servers, and
    // one that cannot be reached does not undo the room.
    for target in remote {
        let invite = ganglion_rpc::UpdateMembership {
            sender: sender.clone(),
            room_id: room_id.clone(),
            target: target.clone(),
            change: ganglion_rpc::MembershipChange::Invite,
            reason: None,
        };
        if let Err(error) = super::membership::invite_remote(&state, invite).await {
            tracing::warn!(%room_id, %target, error = %error.message, "a new room's invite of another server's user failed");
        }
    }
    Ok(Json(json!({ "room_id": room_id })))
}

fn create_room_request(body: CreateRoomBody) -> MatrixResult<CreateRoomRequest> {
    let public = match body.visibility.as_deref() {
        None => false,
        Some(visibility) => access::one_of(visibility, &["public", "private"], "visibility")? == "public",
    };
    let invite = body.invite.iter().map(|user| access::user_id(user)).collect::<MatrixResult<Vec<_>>>()?;
    let room_version = match body.room_version {
        Some(version) => Some(supported_room_version(&version)?),
        None => None,
    };
    Ok(CreateRoomRequest {
        public,
        room_alias_name: body.room_alias_name,
        name: body.name,
        topic: body.topic,
        invite,
        room_version,
        creation_content: body.creation_content,
        initial_state: body.initial_state,
        preset: body.preset,
        is_direct: body.is_direct,
        power_level_content_override: body.power_level_content_override,
    })
}

fn supported_room_version(version: &str) -> MatrixResult<RoomVersionId> {
    RoomVersionId::try_from(version)
        .ok()
        .filter(|version| SUPPORTED_ROOM_VERSIONS.contains(version))
        .ok_or_else(|| {
            MatrixError::new(
                ErrorClass::UnsupportedRoomVersion,
                format!("Room version {version:?} is not supported"),
            )
        })
}
