//! Reports of events, rooms and users to the server's operators (`ganglion reports` lists
//! them). What is reported must exist here, and an event's reporter must be joined to its room
//! and able to see it; otherwise 404.

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixResult};
use ganglion_rpc::{FileReport, ReportTarget};
use ganglion_state::StoredEvent;
use ganglion_storage::{accounts as account_store, events as event_store, rooms as room_store};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    access,
    filter::RoomEventFilter,
    messages::{PageReader, ignored_users},
};
use crate::ClientState;

/// The longest reason kept, in bytes.
const MAX_REASON_BYTES: usize = 4096;

#[derive(Deserialize)]
struct ReportBody {
    reason: Option<String>,
    score: Option<i64>,
}

fn reason_of(body: Map<String, Value>, required: bool) -> MatrixResult<(String, Option<i64>)> {
    let body: ReportBody = access::from_object(body)?;
    let reason = match (body.reason, required) {
        (Some(reason), _) => reason,
        (None, false) => String::new(),
        (None, true) => return Err(MatrixError::missing_param("Missing `reason`")),
    };
    if reason.len() > MAX_REASON_BYTES {
        return Err(MatrixError::invalid_param(format!(
            "`reason` is longer than the maximum of {MAX_REASON_BYTES} bytes"
        )));
    }
    Ok((reason, body.score))
}

/// `POST /rooms/{roomId}/report/{eventId}`.
pub(crate) async fn report_event(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((room_id, event_id)): Path<(String, String)>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let (reason, score) = reason_of(body, false)?;
    let room_id = access::room_id(&room_id)?;
    let event_id = access::event_id(&event_id)?;
    let user_id = session.user_id.as_str();
    let not_found = || MatrixError::not_found("The event was not found or you are not joined to the room");
    let mut conn = state.db.conn().await?;
    let room = room_store::room_by_id(&mut conn, room_id.as_str()).await?.ok_or_else(not_found)?;
    match access::membership(&mut conn, &room, user_id).await? {
        Some(row) if row.membership == "join" => {}
        _ => return Err(not_found()),
    }
    let row = event_store::event_by_id(&mut conn, event_id.as_str()).await?.ok_or_else(not_found)?;
    let event = StoredEvent::from_row(row)?;
    let head = state.positions.current().events.0;
    let rules = access::history_rules(&state, &mut conn, &room, user_id, head).await?;
    let ignored = ignored_users(&mut conn, user_id).await?;
    let filter = RoomEventFilter::default();
    let reader = PageReader { room: &room, rules: &rules, filter: &filter, ignored: &ignored, user_id };
    if event.row.room_nid != room.room_nid || event.row.redacted_by.is_some() || !reader.wants(&event) {
        return Err(not_found());
    }
    drop(conn);
    let target = ReportTarget::Event { room_id, event_id };
    state.master.file_report(FileReport { reporter: session.user_id.clone(), target, reason, score }).await?;
    Ok(Json(json!({})))
}

/// `POST /rooms/{roomId}/report`: the reporter need not be in the room.
pub(crate) async fn report_room(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let (reason, score) = reason_of(body, true)?;
    let room_id = access::room_id(&room_id)?;
    let mut conn = state.db.conn().await?;
    if room_store::room_by_id(&mut conn, room_id.as_str()).await?.is_none() {
        return Err(MatrixError::not_found("The room was not found"));
    }
    drop(conn);
    let target = ReportTarget::Room { room_id };
    state.master.file_report(FileReport { reporter: session.user_id.clone(), target, reason, score }).await?;
    Ok(Json(json!({})))
}

/// `POST /users/{userId}/report`: a user of this server, or of another one this server shares
/// a room with (or did).
pub(crate) async fn report_user(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(user_id): Path<String>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let (reason, score) = reason_of(body, true)?;
    let user_id = access::user_id(&user_id)?;
    let mut conn = state.db.conn().await?;
    let known = account_store::user_exists(&mut conn, user_id.as_str()).await?
        || !room_store::memberships_of_user(&mut conn, user_id.as_str()).await?.is_empty();
    if !known {
        return Err(MatrixError::not_found("The user was not found"));
    }
    drop(conn);
    let target = ReportTarget::User { user_id };
    state.master.file_report(FileReport { reporter: session.user_id.clone(), target, reason, score }).await?;
    Ok(Json(json!({})))
}
