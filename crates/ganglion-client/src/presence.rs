//! `GET` and `PUT /presence/{userId}/status`. Reads come from the presence stream's table;
//! writes go to the master, which owns the live state and its timeouts.
//!
//! As Synapse: a user may read the presence of users they share a joined room with (and their
//! own), anyone else is 403 `M_FORBIDDEN`; only one's own presence may be set. With presence
//! off (`presence.enabled = false`), `GET` answers `offline` for anyone and `PUT` does nothing.

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_events::presence::{PresenceState, presence_content};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixResult, Route};
use ganglion_rpc::SetPresence;
use ganglion_storage::{presence as presence_store, rooms as room_store};
use ganglion_types::EndpointClass::{ClientRead, ClientWrite};
use serde_json::{Map, Value, json};

use crate::{ClientState, rooms::user_id_param};

pub(crate) fn routes() -> Vec<Route<ClientState>> {
    vec![
        Route::get("/_matrix/client/v3/presence/{userId}/status", ClientRead, status),
        Route::put("/_matrix/client/v3/presence/{userId}/status", ClientWrite, set_status),
    ]
}

/// `GET /presence/{userId}/status`.
async fn status(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(user_id): Path<String>,
) -> MatrixResult<Json<Value>> {
    let user_id = user_id_param(&user_id)?;
    if !state.config.presence.enabled {
        return Ok(Json(json!({ "presence": PresenceState::Offline.as_str() })));
    }
    let mut conn = state.db.conn().await?;
    if user_id != session.user_id
        && !room_store::users_share_a_room(&mut conn, session.user_id.as_str(), user_id.as_str()).await?
    {
        return Err(MatrixError::forbidden("You are not allowed to see their presence"));
    }
    let row = presence_store::presence_of_user(&mut conn, user_id.as_str()).await?;
    let now = ganglion_storage::now_ms();
    let content = match row {
        Some(row) => presence_content(
            PresenceState::parse(&row.state).unwrap_or(PresenceState::Offline),
            row.status_msg.as_deref(),
            row.last_active_ts,
            row.currently_active,
            now,
        ),
        // Never seen: offline, as Synapse's default state.
        None => presence_content(PresenceState::Offline, None, 0, false, now),
    };
    Ok(Json(content))
}

/// `PUT /presence/{userId}/status`: `{"presence": …, "status_msg"?: …}` and nothing else (as
/// Synapse, which refuses other keys too).
async fn set_status(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(user_id): Path<String>,
    MatrixJson(mut body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    if user_id_param(&user_id)? != session.user_id {
        return Err(MatrixError::forbidden("You may only set your own presence"));
    }
    let presence = match body.remove("presence") {
        None => return Err(MatrixError::bad_json("Missing `presence`")),
        Some(Value::String(presence)) => PresenceState::parse(&presence)
            .ok_or_else(|| MatrixError::invalid_param("`presence` must be online, unavailable or offline"))?,
        Some(_) => return Err(MatrixError::bad_json("`presence` must be a string")),
    };
    let status_msg = match body.remove("status_msg") {
        None => None,
        Some(Value::String(status_msg)) => Some(status_msg),
        Some(_) => return Err(MatrixError::bad_json("`status_msg` must be a string")),
    };
    if let Some(key) = body.keys().next() {
        return Err(MatrixError::bad_json(format!("Unexpected key `{key}`")));
    }
    if state.config.presence.enabled {
        let request =
            SetPresence { user_id: session.user_id, device_id: session.device_id, presence, status_msg };
        state.master.set_presence(request).await?;
    }
    Ok(Json(json!({})))
}
