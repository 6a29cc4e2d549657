//! Rooms shared with other servers: their events taken into our rooms, and the templates of
//! their users' joins.

use std::sync::Arc;

use ganglion_events::ruma::OwnedEventId;
use ganglion_events::{EventTemplate, Pdu};
use ganglion_rpc::{
    AcceptEvents, EventOutcome, ImportRoom, MadeJoin, MakeJoin, MasterError, MasterResult, MembershipChange,
    PreparedInvite, StoreInvite, UpdateMembership,
};
use ganglion_storage::rooms as room_store;
use ganglion_types::ErrorClass;
use serde_json::json;

use crate::{MasterService, internal, writer::Batch};

/// Authorises and persists each event on its own, in one batch.
pub(crate) async fn accept_events(
    svc: &MasterService,
    request: AcceptEvents,
) -> MasterResult<Vec<EventOutcome>> {
    let mut batch = Batch::begin(svc).await?;
    let mut outliers = Vec::with_capacity(request.outliers.len());
    for (event_id, json) in request.outliers {
        match Pdu::from_json(event_id.clone(), Arc::from(json)) {
            Ok(pdu) => outliers.push(pdu),
            Err(error) => {
                tracing::info!(origin = %request.origin, %event_id, %error, "left out a malformed event of the state at a gap")
            }
        }
    }
    batch.keep_outliers(outliers).await?;
    batch.set_gaps(request.gaps);
    let mut outcomes = Vec::with_capacity(request.events.len());
    for (event_id, json) in request.events {
        let result = match Pdu::from_json(event_id.clone(), Arc::from(json)) {
            Ok(pdu) => batch.append_remote(pdu, false).await.map(|_| ()),
            Err(error) => Err(MasterError::bad_json(error.to_string())),
        };
        if batch.is_poisoned() {
            return Err(result.err().unwrap_or_else(|| MasterError::internal("the batch failed")));
        }
        if let Err(error) = &result {
            tracing::info!(origin = %request.origin, %event_id, %error, "refused another server's event");
        }
        outcomes.push(EventOutcome { event_id, error: result.err() });
    }
    batch.commit().await?;
    Ok(outcomes)
}

/// Older events of a room from another server, kept as history (see `writer/history.rs`).
pub(crate) async fn backfill(svc: &MasterService, request: AcceptEvents) -> MasterResult<Vec<EventOutcome>> {
    let mut pdus = Vec::with_capacity(request.events.len());
    let mut outcomes = Vec::new();
    for (event_id, json) in request.events {
        match Pdu::from_json(event_id.clone(), Arc::from(json)) {
            Ok(pdu) => pdus.push(pdu),
            Err(error) => outcomes
                .push(EventOutcome { event_id, error: Some(MasterError::bad_json(error.to_string())) }),
        }
    }
    let mut batch = Batch::begin(svc).await?;
    outcomes.extend(batch.backfill(pdus).await?);
    batch.commit().await?;
    let kept = outcomes.iter().filter(|outcome| outcome.error.is_none()).count();
    tracing::info!(origin = %request.origin, kept, refused = outcomes.len() - kept, "kept history from another server");
    Ok(outcomes)
}

/// The join event of another server's user as this server would build it now: on the room's
/// forward extremities, with the auth events of the current state, checked against the auth rules
/// (a banned user, or one not invited to an invite-only room, is refused here).
pub(crate) async fn make_join(svc: &MasterService, request: MakeJoin) -> MasterResult<MadeJoin> {
    if request.user_id.server_name().as_str() == svc.config.server_name {
        return Err(MasterError::forbidden("The user is a user of this server"));
    }
    let mut batch = Batch::begin(svc).await?;
    let room = room_store::room_by_id(batch.connection().await?, request.room_id.as_str())
        .await
        .map_err(internal)?
        .ok_or_else(|| MasterError::not_found("Unknown room"))?;
    if !request.leave && !request.versions.contains(&room.room_version) {
        return Err(MasterError::new(
            ErrorClass::IncompatibleRoomVersion { room_version: room.room_version.clone() },
            format!("The room's version is {}, which the joining server does not support", room.room_version),
        ));
    }
    let membership = match (request.leave, request.knock) {
        (true, _) => "leave",
        (false, true) => "knock",
        (false, false) => "join",
    };
    let mut content = json!({ "membership": membership });
    // A restricted room: one of our members vouches for a user of an allowed room.
    if membership == "join"
        && let Some(head) = batch.head(&request.room_id).await?
        && let Some(authoriser) =
            crate::rooms::restricted_join_authoriser(&mut batch, &head, &request.user_id).await?
    {
        content["join_authorised_via_users_server"] = json!(authoriser);
    }
    let template = EventTemplate::state("m.room.member", request.user_id.as_str(), content);
    let pdu = batch.build_checked(&request.room_id, &request.user_id, &template).await?;
    let mut event: serde_json::Value =
        serde_json::from_str(&pdu.json).map_err(|e| MasterError::internal(e.to_string()))?;
    if let Some(object) = event.as_object_mut() {
        // The joining server hashes and signs it.
        object.remove("hashes");
        object.remove("signatures");
        // Room versions 1 and 2: the joining server names its event itself.
        object.remove("event_id");
        object.insert("origin".to_owned(), json!(request.user_id.server_name().as_str()));
    }
    let room_version =
        room.room_version.as_str().try_into().map_err(|_| MasterError::internal("bad room version"))?;
    Ok(MadeJoin { room_version, event })
}

/// Persists a room of other servers one of our users joined, with its state and the join.
pub(crate) async fn import_room(svc: &MasterService, request: ImportRoom) -> MasterResult<OwnedEventId> {
    let parse = |(event_id, json): (OwnedEventId, String)| {
        Pdu::from_json(event_id, Arc::from(json)).map_err(|error| MasterError::bad_json(error.to_string()))
    };
    let join = parse(request.join)?;
    if join.sender.server_name().as_str() != svc.config.server_name
        || join.state_key.as_deref() != Some(join.sender.as_str())
        || join.room_id != request.room_id
    {
        return Err(MasterError::bad_json("Not a join of one of our users to the room"));
    }
    let state_ids: std::collections::HashSet<OwnedEventId> =
        request.state.iter().map(|(event_id, _)| event_id.clone()).collect();
    let history: std::collections::HashSet<OwnedEventId> =
        request.history.iter().map(|(event_id, _)| event_id.clone()).collect();
    let mut events =
        Vec::with_capacity(request.state.len() + request.auth_chain.len() + request.history.len());
    for event in request.state.into_iter().chain(request.auth_chain).chain(request.history) {
        let pdu = parse(event)?;
        let in_state = state_ids.contains(&pdu.event_id);
        events.push((pdu, in_state));
    }
    let mut batch = Batch::begin(svc).await?;
    let event = batch.import_room(&request.room_id, &request.room_version, events, &history, join).await?;
    batch.commit().await?;
    Ok(event.pdu.event_id.clone())
}

/// An invite of another server's user: built on the room's head and checked, with the stripped
/// state the invitee is shown, but not persisted until that server countersigned it.
pub(crate) async fn prepare_invite(
    svc: &MasterService,
    request: UpdateMembership,
) -> MasterResult<PreparedInvite> {
    if request.change != MembershipChange::Invite
        || request.target.server_name().as_str() == svc.config.server_name
    {
        return Err(MasterError::invalid_param("Only invites of other servers' users are prepared"));
    }
    let mut content = serde_json::Map::new();
    content.insert("membership".into(), json!("invite"));
    if let Some(reason) = request.reason {
        content.insert("reason".into(), json!(reason));
    }
    let template =
        EventTemplate::state("m.room.member", request.target.as_str(), serde_json::Value::Object(content));
    crate::writer::check_template(&template, Some(&request.room_id), &request.sender)?;
    let mut batch = Batch::begin(svc).await?;
    let room = room_store::room_by_id(batch.connection().await?, request.room_id.as_str())
        .await
        .map_err(internal)?
        .ok_or_else(|| MasterError::not_found("Unknown room"))?;
    let pdu = batch.build_checked(&request.room_id, &request.sender, &template).await?;
    let head = batch.head(&request.room_id).await?.ok_or_else(|| MasterError::not_found("Unknown room"))?;
    let mut stripped = Vec::new();
    let keys = ganglion_events::STRIPPED_STATE_TYPES
        .iter()
        .map(|kind| (*kind, ""))
        .chain(std::iter::once(("m.room.member", request.sender.as_str())));
    for (kind, key) in keys {
        if let Some(event) = batch.state_event(&head, kind, key).await? {
            stripped.push(json!({
                "type": kind,
                "state_key": key,
                "content": event.pdu.content_value(),
                "sender": event.pdu.sender.as_str(),
            }));
        }
    }
    let room_version =
        room.room_version.as_str().try_into().map_err(|_| MasterError::internal("bad room version"))?;
    Ok(PreparedInvite {
        room_version,
        event_id: pdu.event_id.clone(),
        json: pdu.json.to_string(),
        invite_room_state: serde_json::Value::Array(stripped),
    })
}

/// A prepared invite countersigned by the invitee's server (`origin`): checked again against the
/// room's state now, and persisted.
pub(crate) async fn persist_invite(
    svc: &MasterService,
    request: AcceptEvents,
) -> MasterResult<Vec<EventOutcome>> {
    let mut batch = Batch::begin(svc).await?;
    let mut outcomes = Vec::new();
    for (event_id, json) in request.events {
        let result = match Pdu::from_json(event_id.clone(), Arc::from(json)) {
            Ok(pdu)
                if pdu.kind.to_string() == "m.room.member"
                    && pdu.content_value()["membership"] == "invite"
                    && pdu
                        .state_key
                        .as_deref()
                        .and_then(|key| ganglion_events::ruma::UserId::parse(key).ok())
                        .is_some_and(|target| target.server_name().as_str() == request.origin) =>
            {
                batch.append_remote(pdu, true).await.map(|_| ())
            }
            Ok(_) => Err(MasterError::bad_json("Not an invite of a user of that server")),
            Err(error) => Err(MasterError::bad_json(error.to_string())),
        };
        if batch.is_poisoned() {
            return Err(result.err().unwrap_or_else(|| MasterError::internal("the batch failed")));
        }
        outcomes.push(EventOutcome { event_id, error: result.err() });
    }
    batch.commit().await?;
    Ok(outcomes)
}

/// Another server's invite of one of our users (checked and countersigned by the federation
/// reader).
pub(crate) async fn store_invite(svc: &MasterService, request: StoreInvite) -> MasterResult<()> {
    let (event_id, json) = request.event;
    let pdu = Pdu::from_json(event_id, Arc::from(json))
        .map_err(|error| MasterError::bad_json(error.to_string()))?;
    let target = pdu.state_key.as_deref().and_then(|key| ganglion_events::ruma::UserId::parse(key).ok());
    let ours = |user: &ganglion_events::ruma::UserId| user.server_name().as_str() == svc.config.server_name;
    let invite = pdu.content_value()["membership"] == "invite" && target.as_deref().is_some_and(ours);
    // Our user's rejection of such an invite, or their knock on such a room.
    let own_membership = matches!(pdu.content_value()["membership"].as_str(), Some("leave" | "knock"))
        && ours(&pdu.sender)
        && target.as_deref() == Some(&*pdu.sender);
    if pdu.kind.to_string() != "m.room.member"
        || pdu.room_id != request.room_id
        || !(invite || own_membership)
    {
        return Err(MasterError::bad_json(
            "Neither an invite of a user of this server, nor its rejection, nor its knock",
        ));
    }
    let mut batch = Batch::begin(svc).await?;
    batch.store_remote_invite(&request.room_version, pdu, &request.invite_room_state.to_string()).await?;
    batch.commit().await?;
    Ok(())
}
