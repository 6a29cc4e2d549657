//! Reading room state: all of it, or one event. A member sees the current state; a former
//! member the state when they left.

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_http::{Auth, MatrixError, MatrixQuery, MatrixResult, Session};
use serde::Deserialize;
use serde_json::Value;

use super::access;
use crate::ClientState;

/// `GET /rooms/{roomId}/state`.
pub(crate) async fn room_state(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
) -> MatrixResult<Json<Value>> {
    let mut conn = state.db.conn().await?;
    let readable = access::readable_room(&state, &mut conn, &room_id, session.user_id.as_str()).await?;
    let snapshot = access::snapshot(&state, &mut conn, readable.snapshot_nid).await?;
    let mut events = state.caches.state_events(&mut conn, &snapshot, None).await?;
    events.sort_by_key(|event| event.row.stream_pos);
    let viewer = (session.user_id.as_str(), session.device_id.as_str());
    let events = state.caches.client_events(&mut conn, &events, Some(viewer)).await?;
    Ok(Json(Value::Array(events)))
}

#[derive(Deserialize)]
pub(crate) struct StateEventQuery {
    format: Option<String>,
}

/// `GET /rooms/{roomId}/state/{eventType}/{stateKey}`.
pub(crate) async fn state_event(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((room_id, event_type, state_key)): Path<(String, String, String)>,
    MatrixQuery(query): MatrixQuery<StateEventQuery>,
) -> MatrixResult<Json<Value>> {
    one_state_event(&state, &session, &room_id, &event_type, &state_key, query).await
}

/// `GET /rooms/{roomId}/state/{eventType}` (and with a trailing slash): the empty state key.
pub(crate) async fn state_event_without_key(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((room_id, event_type)): Path<(String, String)>,
    MatrixQuery(query): MatrixQuery<StateEventQuery>,
) -> MatrixResult<Json<Value>> {
    one_state_event(&state, &session, &room_id, &event_type, "", query).await
}

/// The content of one state event, or with `format=event` the whole client event.
async fn one_state_event(
    state: &ClientState,
    session: &Session,
    room_id: &str,
    event_type: &str,
    state_key: &str,
    query: StateEventQuery,
) -> MatrixResult<Json<Value>> {
    let whole_event =
        access::one_of(query.format.as_deref().unwrap_or("content"), &["content", "event"], "format")?
            == "event";
    let mut conn = state.db.conn().await?;
    let readable = access::readable_room(state, &mut conn, room_id, session.user_id.as_str()).await?;
    let snapshot = access::snapshot(state, &mut conn, readable.snapshot_nid).await?;
    let event = state.caches.state_event(&mut conn, &snapshot, event_type, state_key).await?;
    let event = event.ok_or_else(|| MatrixError::not_found("Event not found"))?;
    if whole_event {
        let viewer = (session.user_id.as_str(), session.device_id.as_str());
        let formatted =
            state.caches.client_events(&mut conn, std::slice::from_ref(&event), Some(viewer)).await?;
        let formatted =
            formatted.into_iter().next().ok_or_else(|| MatrixError::not_found("Event not found"))?;
        return Ok(Json(formatted));
    }
    Ok(Json(state.caches.visible_content(&mut conn, &event).await?))
}
