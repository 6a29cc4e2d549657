//! Membership changes: join (by id or alias), invite, leave, forget, kick, ban, unban. The
//! master checks them against the auth rules.

use axum::{
    Json,
    extract::{Path, RawQuery, State},
};
use ganglion_config::RateLimitAction;
use ganglion_events::ruma::{OwnedRoomId, OwnedServerName, OwnedUserId};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixResult};
use ganglion_storage::rooms as room_store;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::access;
use crate::ClientState;
use ganglion_rpc::{AcceptEvents, ForgetRoom, ImportRoom, MembershipChange, StoreInvite, UpdateMembership};

#[derive(Deserialize)]
struct ReasonBody {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct TargetBody {
    user_id: Option<String>,
    reason: Option<String>,
}

/// `POST /join/{roomIdOrAlias}`. A room of other servers is joined through the servers the
/// client names (`via`, or the older `server_name`), the alias's server and the servers its
/// directory names, and the room id's server.
pub(crate) async fn join_by_id_or_alias(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id_or_alias): Path<String>,
    RawQuery(query): RawQuery,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: ReasonBody = access::from_object(body)?;
    let mut via = via_servers(query.as_deref())?;
    let room_id = if room_id_or_alias.starts_with('#') {
        let alias = access::room_alias(&room_id_or_alias)?;
        let local = {
            let mut conn = state.db.conn().await?;
            room_store::room_id_by_alias(&mut conn, alias.as_str()).await?
        };
        match local {
            Some(room_id) => access::room_id(&room_id)?,
            None if alias.server_name().as_str() != state.config.server_name => {
                let answer = state.federation.client.room_alias(&alias).await?;
                via.push(alias.server_name().to_owned());
                via.extend(
                    answer["servers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|server| OwnedServerName::try_from(server.as_str()?).ok()),
                );
                access::room_id(answer["room_id"].as_str().unwrap_or_default())?
            }
            None => return Err(MatrixError::not_found(format!("Room alias {alias} not found"))),
        }
    } else {
        access::room_id(&room_id_or_alias)?
    };
    join_room(&state, &session.user_id, room_id, body.reason, via).await
}

/// `POST /knock/{roomIdOrAlias}`: asks to be let in a room whose join rule is `knock` or
/// `knock_restricted` (room versions 7 and 10 on); a member who may invite lets the user in by
/// inviting them. A room of other servers is knocked on through the servers the client names
/// (`via`, `server_name`), the alias's server and those its directory names.
pub(crate) async fn knock(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id_or_alias): Path<String>,
    RawQuery(query): RawQuery,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: ReasonBody = access::from_object(body)?;
    let mut via = via_servers(query.as_deref())?;
    let user_id = &session.user_id;
    state.authenticator.rate_limiter().check_user(RateLimitAction::Joins, user_id.as_str())?;
    let mut conn = state.db.conn().await?;
    let room_id = if room_id_or_alias.starts_with('#') {
        let alias = access::room_alias(&room_id_or_alias)?;
        match room_store::room_id_by_alias(&mut conn, alias.as_str()).await? {
            Some(room_id) => access::room_id(&room_id)?,
            None if alias.server_name().as_str() != state.config.server_name => {
                let answer = state.federation.client.room_alias(&alias).await?;
                via.push(alias.server_name().to_owned());
                via.extend(
                    answer["servers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|server| OwnedServerName::try_from(server.as_str()?).ok()),
                );
                access::room_id(answer["room_id"].as_str().unwrap_or_default())?
            }
            None => return Err(MatrixError::not_found(format!("Room alias {alias} not found"))),
        }
    } else {
        access::room_id(&room_id_or_alias)?
    };
    let known = room_store::room_by_id(&mut conn, room_id.as_str())
        .await?
        .is_some_and(|room| room.latest_event_nid.is_some());
    let profile = ganglion_storage::accounts::profile_of_user(&mut conn, user_id.as_str()).await?;
    drop(conn);
    let ours = room_id.server_name().is_some_and(|server| server.as_str() == state.config.server_name);
    if known || ours {
        if !known {
            return Err(MatrixError::not_found("Unknown room"));
        }
        state
            .master
            .update_membership(own(user_id, room_id.clone(), MembershipChange::Knock, body.reason))
            .await?;
        return Ok(Json(json!({ "room_id": room_id })));
    }
    // A room this server is not in: knocked on through a server that is.
    if let Some(server) = room_id.server_name() {
        via.push(server.to_owned());
    }
    let mut seen = std::collections::HashSet::new();
    via.retain(|server| seen.insert(server.clone()));
    let mut content = Map::new();
    let profile = profile.unwrap_or_default();
    if let Some(displayname) = profile.displayname {
        content.insert("displayname".into(), json!(displayname));
    }
    if let Some(avatar_url) = profile.avatar_url {
        content.insert("avatar_url".into(), json!(avatar_url));
    }
    if let Some(reason) = body.reason {
        content.insert("reason".into(), json!(reason));
    }
    let knocked =
        ganglion_federation::remote_join::knock_remote(&state.federation, &room_id, user_id, content, &via)
            .await?;
    let store = StoreInvite {
        room_id: room_id.clone(),
        room_version: knocked.room_version,
        event: (knocked.knock.event_id.clone(), knocked.knock.json.to_string()),
        invite_room_state: knocked.knock_room_state,
    };
    state.master.store_invite(store).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// The servers named by `via` and `server_name` in a query string.
fn via_servers(query: Option<&str>) -> MatrixResult<Vec<OwnedServerName>> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(key, _)| key == "via" || key == "server_name")
        .map(|(_, value)| {
            OwnedServerName::try_from(value.as_ref())
                .map_err(|_| MatrixError::invalid_param(format!("{value} is not a server name")))
        })
        .collect()
}

/// `POST /rooms/{roomId}/join`.
pub(crate) async fn join(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: ReasonBody = access::from_object(body)?;
    join_room(&state, &session.user_id, access::room_id(&room_id)?, body.reason, Vec::new()).await
}

async fn join_room(
    state: &ClientState,
    user_id: &OwnedUserId,
    room_id: OwnedRoomId,
    reason: Option<String>,
    mut via: Vec<OwnedServerName>,
) -> MatrixResult<Json<Value>> {
    state.authenticator.rate_limiter().check_user(RateLimitAction::Joins, user_id.as_str())?;
    let (known, profile) = {
        let mut conn = state.db.conn().await?;
        let room = room_store::room_by_id(&mut conn, room_id.as_str()).await?;
        let profile = ganglion_storage::accounts::profile_of_user(&mut conn, user_id.as_str()).await?;
        // Invited to a room of other servers: the inviter's server is in it.
        if let Some(room) = room.as_ref().filter(|room| room.latest_event_nid.is_none()) {
            let membership =
                room_store::membership_of_user_in_room(&mut conn, room.room_nid, user_id.as_str()).await?;
            if let Some(invite) = membership.filter(|membership| membership.membership == "invite") {
                let rows = ganglion_storage::events::events_by_nid(&mut conn, &[invite.event_nid]).await?;
                if let Some(sender) =
                    rows.first().and_then(|row| OwnedUserId::try_from(row.sender.as_str()).ok())
                {
                    via.push(sender.server_name().to_owned());
                }
            }
        }
        (room.is_some_and(|room| room.latest_event_nid.is_some()), profile.unwrap_or_default())
    };
    let ours = room_id.server_name().is_some_and(|server| server.as_str() == state.config.server_name);
    if known || ours || via.is_empty() && room_id.server_name().is_none() {
        state.master.update_membership(own(user_id, room_id.clone(), MembershipChange::Join, reason)).await?;
        return Ok(Json(json!({ "room_id": room_id })));
    }
    // A room this server is not in: joined through a server that is.
    if let Some(server) = room_id.server_name() {
        via.push(server.to_owned());
    }
    let mut seen = std::collections::HashSet::new();
    via.retain(|server| seen.insert(server.clone()));
    let mut content = Map::new();
    if let Some(displayname) = profile.displayname {
        content.insert("displayname".into(), json!(displayname));
    }
    if let Some(avatar_url) = profile.avatar_url {
        content.insert("avatar_url".into(), json!(avatar_url));
    }
    if let Some(reason) = reason {
        content.insert("reason".into(), json!(reason));
    }
    let joined =
        ganglion_federation::remote_join::join_remote(&state.federation, &room_id, user_id, content, &via)
            .await?;
    let pair = |pdu: ganglion_federation::pdu::CheckedPdu| (pdu.event_id, pdu.json);
    state
        .master
        .import_room(ImportRoom {
            room_id: room_id.clone(),
            room_version: joined.room_version,
            join: pair(joined.join),
            state: joined.state.into_iter().map(pair).collect(),
            auth_chain: joined.auth_chain.into_iter().map(pair).collect(),
            history: joined.history.into_iter().map(pair).collect(),
        })
        .await?;
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
    if let Some(invite) = remote_invite(&state, &room_id, user_id).await? {
        decline_remote_invite(&state, &room_id, user_id, invite).await?;
        return Ok(Json(json!({})));
    }
    state.master.update_membership(own(user_id, room_id, MembershipChange::Leave, body.reason)).await?;
    Ok(Json(json!({})))
}

/// The invite of `user_id` to a room of other servers this server is not in, if that is all
/// there is of the room here.
async fn remote_invite(
    state: &ClientState,
    room_id: &OwnedRoomId,
    user_id: &OwnedUserId,
) -> MatrixResult<Option<(String, ganglion_state::StoredEvent)>> {
    let mut conn = state.db.conn().await?;
    let Some(room) = room_store::room_by_id(&mut conn, room_id.as_str()).await? else { return Ok(None) };
    if room.latest_event_nid.is_some() {
        return Ok(None);
    }
    let membership =
        room_store::membership_of_user_in_room(&mut conn, room.room_nid, user_id.as_str()).await?;
    let Some(invite) = membership.filter(|membership| membership.membership == "invite") else {
        return Ok(None);
    };
    let rows = ganglion_storage::events::events_by_nid(&mut conn, &[invite.event_nid]).await?;
    let Some(row) = rows.into_iter().next() else { return Ok(None) };
    Ok(Some((room.room_version, ganglion_state::StoredEvent::from_row(row)?)))
}

/// Declines an invite to a room of other servers: through the inviting server
/// (`make_leave`/`send_leave`), or, when it cannot be reached, here alone with a leave that
/// follows the invite, so the user is never stuck with it.
async fn decline_remote_invite(
    state: &ClientState,
    room_id: &OwnedRoomId,
    user_id: &OwnedUserId,
    (version, invite): (String, ganglion_state::StoredEvent),
) -> MatrixResult<()> {
    let server = invite.pdu.sender.server_name().to_owned();
    let (room_version, leave) =
        match ganglion_federation::remote_join::leave_remote(&state.federation, &server, room_id, user_id)
            .await
        {
            Ok(left) => left,
            Err(error) => {
                tracing::info!(%room_id, %server, %error, "declined an invite without its server");
                let room_version = ganglion_events::ruma::RoomVersionId::try_from(version.as_str())
                    .map_err(|_| MatrixError::internal("a stored room version does not parse"))?;
                let rules = ganglion_events::rules_for(&room_version)
                    .ok_or_else(|| MatrixError::internal("an invite of an unsupported room version"))?;
                let template = ganglion_events::EventTemplate::state(
                    "m.room.member",
                    user_id.as_str(),
                    json!({ "membership": "leave" }),
                );
                let ids = [invite.pdu.event_id.clone()];
                let pdu = ganglion_events::build_pdu(
                    state.federation.client.key(),
                    &rules,
                    Some(room_id),
                    user_id,
                    &template,
                    &ids,
                    &ids,
                    u64::from(invite.pdu.depth) + 1,
                    ganglion_storage::now_ms().max(0) as u64,
                )?;
                (room_version, pdu)
            }
        };
    let store = StoreInvite {
        room_id: room_id.clone(),
        room_version,
        event: (leave.event_id.clone(), leave.json.to_string()),
        invite_room_state: json!([]),
    };
    state.master.store_invite(store).await?;
    Ok(())
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
    if change == MembershipChange::Invite && request.target.server_name().as_str() != state.config.server_name
    {
        invite_remote(&state, request).await?;
    } else {
        state.master.update_membership(request).await?;
    }
    Ok(Json(json!({})))
}

/// An invite of another server's user: built by the master, countersigned by that server, then
/// persisted.
pub(crate) async fn invite_remote(state: &ClientState, request: UpdateMembership) -> MatrixResult<()> {
    let (room_id, target) = (request.room_id.clone(), request.target.clone());
    let prepared = state.master.prepare_invite(request).await?;
    let signed = ganglion_federation::remote_invite::invite_remote(
        &state.federation,
        &room_id,
        &prepared.room_version,
        (prepared.event_id.as_str(), &prepared.json),
        &prepared.invite_room_state,
        &target,
    )
    .await?;
    let countersigned = AcceptEvents {
        origin: target.server_name().to_string(),
        events: vec![(signed.event_id, signed.json)],
        ..AcceptEvents::default()
    };
    let outcomes = state.master.persist_invite(countersigned).await?;
    match outcomes.into_iter().find_map(|outcome| outcome.error) {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
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
