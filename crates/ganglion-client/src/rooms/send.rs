//! Sending events: messages (idempotent per transaction id), state and redactions.

use std::collections::HashSet;

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_config::RateLimitAction;
use ganglion_events::{
    EventTemplate,
    ruma::{OwnedRoomId, RoomId},
};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixResult, Session};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::access::{self, RequiredJson};
use crate::ClientState;
use ganglion_rpc::SendEvent;

/// `PUT /rooms/{roomId}/send/{eventType}/{txnId}`.
pub(crate) async fn send_message(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((room_id, event_type, txn_id)): Path<(String, String, String)>,
    RequiredJson(content): RequiredJson,
) -> MatrixResult<Json<Value>> {
    state.authenticator.rate_limiter().check_user(RateLimitAction::Message, session.user_id.as_str())?;
    let room_id = access::room_id(&room_id)?;
    let mut template = EventTemplate::message(event_type, Value::Object(content));
    check_size(&session, &room_id, &template)?;
    // A redaction sent as a message carries its target in the content; the builder places it
    // where the room version wants it.
    if template.kind == "m.room.redaction"
        && let Some(content) = template.content.as_object_mut()
        && let Some(target) = content.remove("redacts")
    {
        let Value::String(target) = target else {
            return Err(MatrixError::bad_json("`redacts` must be an event id"));
        };
        template.redacts = Some(access::event_id(&target)?);
    }
    let event_id = state.master.send_event(send_request(&session, room_id, template, Some(txn_id))).await?;
    Ok(Json(json!({ "event_id": event_id })))
}

/// `PUT /rooms/{roomId}/state/{eventType}/{stateKey}`.
pub(crate) async fn send_state(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((room_id, event_type, state_key)): Path<(String, String, String)>,
    RequiredJson(content): RequiredJson,
) -> MatrixResult<Json<Value>> {
    put_state(&state, &session, &room_id, event_type, state_key, content).await
}

/// `PUT /rooms/{roomId}/state/{eventType}` (and with a trailing slash): the empty state key.
pub(crate) async fn send_state_without_key(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((room_id, event_type)): Path<(String, String)>,
    RequiredJson(content): RequiredJson,
) -> MatrixResult<Json<Value>> {
    put_state(&state, &session, &room_id, event_type, String::new(), content).await
}

async fn put_state(
    state: &ClientState,
    session: &Session,
    room_id: &str,
    event_type: String,
    state_key: String,
    content: Map<String, Value>,
) -> MatrixResult<Json<Value>> {
    state.authenticator.rate_limiter().check_user(RateLimitAction::Message, session.user_id.as_str())?;
    let room_id = access::room_id(room_id)?;
    let template = EventTemplate::state(event_type, state_key, Value::Object(content));
    check_size(session, &room_id, &template)?;
    if template.kind == "m.room.canonical_alias"
        && let Some(content) = template.content.as_object()
    {
        check_new_aliases(state, room_id.as_str(), content).await?;
    }
    let event_id = state.master.send_event(send_request(session, room_id, template, None)).await?;
    Ok(Json(json!({ "event_id": event_id })))
}

/// Event types whose content this handler validates itself before the master sees it.
const CHECKED_HERE: [&str; 2] = ["m.room.redaction", "m.room.canonical_alias"];

/// An event too large whatever the room adds is refused before the content's own checks: a
/// 100 KB `redacts` or alias makes a too-large event before an invalid one. Only the types
/// validated here need it early; the master checks every event (and `type` and `state_key`
/// lengths) before its batch, so ordinary sends are measured once.
fn check_size(session: &Session, room_id: &RoomId, template: &EventTemplate) -> MatrixResult<()> {
    if !CHECKED_HERE.contains(&template.kind.as_str()) {
        return Ok(());
    }
    ganglion_events::check_template_size(template, Some(room_id), &session.user_id).map_err(MatrixError::from)
}

/// Aliases newly listed in an `m.room.canonical_alias` event must be valid aliases; those
/// already in the room's state are not checked again, as the spec asks.
// FIXME: the spec also wants `M_BAD_ALIAS` for a local alias that points to another room, which
// needs an error class of its own.
async fn check_new_aliases(
    state: &ClientState,
    room_id: &str,
    content: &Map<String, Value>,
) -> MatrixResult<()> {
    let listed = listed_aliases(content)?;
    if listed.is_empty() {
        return Ok(());
    }
    let mut conn = state.db.conn().await?;
    let room = access::room(&mut conn, room_id).await?;
    let snapshot = access::snapshot(state, &mut conn, room.current_snapshot_nid).await?;
    let existing = match state.caches.state_event(&mut conn, &snapshot, "m.room.canonical_alias", "").await? {
        Some(event) => {
            let content = state.caches.visible_content(&mut conn, &event).await?;
            content.as_object().map(listed_aliases).transpose().ok().flatten().unwrap_or_default()
        }
        None => Vec::new(),
    };
    let existing: HashSet<&str> = existing.iter().map(String::as_str).collect();
    for alias in listed.iter().filter(|alias| !existing.contains(alias.as_str())) {
        access::room_alias(alias)?;
    }
    Ok(())
}

/// `alias` and `alt_aliases` of a canonical alias content.
fn listed_aliases(content: &Map<String, Value>) -> MatrixResult<Vec<String>> {
    #[derive(Deserialize)]
    struct CanonicalAlias {
        alias: Option<String>,
        #[serde(default)]
        alt_aliases: Vec<String>,
    }
    let parsed: CanonicalAlias = access::from_object(content.clone())?;
    Ok(parsed.alias.into_iter().chain(parsed.alt_aliases).collect())
}

#[derive(Deserialize)]
struct RedactBody {
    reason: Option<String>,
}

/// `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`.
pub(crate) async fn redact(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((room_id, event_id, txn_id)): Path<(String, String, String)>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    state.authenticator.rate_limiter().check_user(RateLimitAction::Message, session.user_id.as_str())?;
    let body: RedactBody = access::from_object(body)?;
    let room_id = access::room_id(&room_id)?;
    let target = access::event_id(&event_id)?;
    let mut content = Map::new();
    if let Some(reason) = body.reason {
        content.insert("reason".into(), Value::String(reason));
    }
    let template = EventTemplate {
        kind: "m.room.redaction".into(),
        content: Value::Object(content),
        state_key: None,
        redacts: Some(target),
    };
    let event_id = state.master.send_event(send_request(&session, room_id, template, Some(txn_id))).await?;
    Ok(Json(json!({ "event_id": event_id })))
}

fn send_request(
    session: &Session,
    room_id: OwnedRoomId,
    template: EventTemplate,
    txn_id: Option<String>,
) -> SendEvent {
    SendEvent {
        sender: session.user_id.clone(),
        device_id: Some(session.device_id.clone()),
        room_id,
        template,
        txn_id,
    }
}
