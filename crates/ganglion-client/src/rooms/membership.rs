//! Membership changes: join (by id or alias), invite, leave, forget, kick, ban, unban. The
//! master checks them against the auth rules.

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_config::RateLimitAction;
use ganglion_events::ruma::{OwnedRoomId, OwnedUserId};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixResult};
use ganglion_storage::rooms as room_store;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::access;
use crate::ClientState;
use ganglion_rpc::{ForgetRoom, MembershipChange, UpdateMembership};

#[derive(Deserialize)]
struct ReasonBody {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct TargetBody {
    user_id: Option<String>,
    reason: Option<String>,
}

/// `POST /join/{roomIdOrAlias}`.
pub(crate) async fn join_by_id_or_alias(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id_or_alias): Path<String>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: ReasonBody = access::from_object(body)?;
    let room_id = if room_id_or_alias.starts_with('#') {
        let alias = access::room_alias(&room_id_or_alias)?;
        let mut conn = state.db.conn().await?;
        let room_id = room_store::room_id_by_alias(&mut conn, alias.as_str()).await?;
        let room_id =
            room_id.ok_or_else(|| MatrixError::not_found(format!("Room alias {alias} not found")))?;
        access::room_id(&room_id)?
    } else {
        access::room_id(&room_id_or_alias)?
    };
    join_room(&state, &session.user_id, room_id, body.reason).await
}

/// `POST /rooms/{roomId}/join`.
pub(crate) async fn join(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: ReasonBody = access::from_object(body)?;
    join_room(&state, &session.user_id, access::room_id(&room_id)?, body.reason).await
}

async fn join_room(
    state: &ClientState,
    user_id: &OwnedUserId,
    room_id: OwnedRoomId,
    reason: Option<String>,
) -> MatrixResult<Json<Value>> {
    state.authenticator.rate_limiter().check_user(RateLimitAction::Joins, user_id.as_str())?;
    state.master.update_membership(own(user_id, room_id.clone(), MembershipChange::Join, reason)).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

pub(crate) async fn leave(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: ReasonBody = access::from_object(body)?;
    let room_id = access::room_id(&room_id)?;
    let user_id = &session.user_id;
    state.master.update_membership(own(user_id, room_id, MembershipChange::Leave, body.reason)).await?;
    Ok(Json(json!({})))
}

/// `POST /rooms/{roomId}/forget`. The master refuses (400 `M_UNKNOWN`) while the user is still
/// in the room.
pub(crate) async fn forget(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
) -> MatrixResult<Json<Value>> {
    let room_id = access::room_id(&room_id)?;
    state.master.forget_room(ForgetRoom { user_id: session.user_id, room_id }).await?;
    Ok(Json(json!({})))
}

pub(crate) async fn invite(
    state: State<ClientState>,
    auth: Auth,
    path: Path<String>,
    body: MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    change_other(state, auth, path, body, MembershipChange::Invite).await
}

pub(crate) async fn kick(
    state: State<ClientState>,
    auth: Auth,
    path: Path<String>,
    body: MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    change_other(state, auth, path, body, MembershipChange::Kick).await
}

pub(crate) async fn ban(
    state: State<ClientState>,
    auth: Auth,
    path: Path<String>,
    body: MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    change_other(state, auth, path, body, MembershipChange::Ban).await
}

pub(crate) async fn unban(
    state: State<ClientState>,
    auth: Auth,
    path: Path<String>,
    body: MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    change_other(state, auth, path, body, MembershipChange::Unban).await
}

/// A membership change the sender makes to another user (`user_id` in the body).
async fn change_other(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
    change: MembershipChange,
) -> MatrixResult<Json<Value>> {
    let body: TargetBody = access::from_object(body)?;
    let room_id = access::room_id(&room_id)?;
    let target = body.user_id.ok_or_else(|| MatrixError::missing_param("Missing `user_id`"))?;
    let target = access::user_id(&target)?;
    if change == MembershipChange::Invite {
        let limiter = state.authenticator.rate_limiter();
        let inviter = session.user_id.as_str();
        limiter.check_user(RateLimitAction::InvitesPerIssuer, inviter)?;
        limiter.check_on_behalf_of(RateLimitAction::InvitesPerRoom, room_id.as_str(), inviter)?;
        limiter.check_on_behalf_of(RateLimitAction::InvitesPerUser, target.as_str(), inviter)?;
    }
    let request = UpdateMembership { sender: session.user_id, room_id, target, change, reason: body.reason };
    state.master.update_membership(request).await?;
    Ok(Json(json!({})))
}

/// The user's own change of membership.
fn own(
    user_id: &OwnedUserId,
    room_id: OwnedRoomId,
    change: MembershipChange,
    reason: Option<String>,
) -> UpdateMembership {
    UpdateMembership { sender: user_id.clone(), room_id, target: user_id.clone(), change, reason }
}
