//! Typing notifications, receipts and the fully-read marker.

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_events::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixResult};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::access;
use crate::ClientState;
use ganglion_rpc::{SetAccountData, SetReceipt, SetTyping};

/// How long a user types when the client names no timeout.
const DEFAULT_TYPING_TIMEOUT_MS: u64 = 30_000;

#[derive(Deserialize)]
struct TypingBody {
    typing: bool,
    timeout: Option<u64>,
}

/// `PUT /rooms/{roomId}/typing/{userId}`: users may only set their own typing state.
pub(crate) async fn typing(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((room_id, user_id)): Path<(String, String)>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: TypingBody = access::from_object(body)?;
    let room_id = access::room_id(&room_id)?;
    if access::user_id(&user_id)? != session.user_id {
        return Err(MatrixError::forbidden("You may only set your own typing state"));
    }
    let timeout = body.timeout.unwrap_or(DEFAULT_TYPING_TIMEOUT_MS);
    let request = SetTyping { user_id: session.user_id, room_id, typing: body.typing, timeout_ms: timeout };
    state.master.set_typing(request).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct ReceiptBody {
    thread_id: Option<Value>,
}

/// `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`.
pub(crate) async fn receipt(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((room_id, receipt_type, event_id)): Path<(String, String, String)>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: ReceiptBody = access::from_object(body)?;
    let room_id = access::room_id(&room_id)?;
    let receipt_type =
        access::one_of(&receipt_type, &["m.read", "m.read.private", "m.fully_read"], "receiptType")?;
    let event_id = access::event_id(&event_id)?;
    let thread_id = match body.thread_id {
        None => None,
        Some(Value::String(thread_id)) if !thread_id.is_empty() => Some(thread_id),
        Some(_) => return Err(MatrixError::invalid_param("`thread_id` must be a non-empty string")),
    };
    if receipt_type == "m.fully_read" {
        if thread_id.is_some() {
            return Err(MatrixError::invalid_param("`m.fully_read` takes no `thread_id`"));
        }
        set_fully_read(&state, &session.user_id, &room_id, &event_id).await?;
    } else {
        state
            .master
            .set_receipt(receipt_request(&session.user_id, &room_id, receipt_type, &event_id, thread_id))
            .await?;
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct ReadMarkersBody {
    #[serde(rename = "m.fully_read")]
    fully_read: Option<String>,
    #[serde(rename = "m.read")]
    read: Option<String>,
    #[serde(rename = "m.read.private")]
    read_private: Option<String>,
}

/// `POST /rooms/{roomId}/read_markers`: the fully-read marker and the receipts in one call.
pub(crate) async fn read_markers(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: ReadMarkersBody = access::from_object(body)?;
    let room_id = access::room_id(&room_id)?;
    let parse = |id: Option<String>| id.as_deref().map(access::event_id).transpose();
    let (fully_read, read, read_private) =
        (parse(body.fully_read)?, parse(body.read)?, parse(body.read_private)?);
    let user_id = &session.user_id;
    if let Some(event_id) = &fully_read {
        set_fully_read(&state, user_id, &room_id, event_id).await?;
    }
    if let Some(event_id) = &read {
        state.master.set_receipt(receipt_request(user_id, &room_id, "m.read", event_id, None)).await?;
    }
    if let Some(event_id) = &read_private {
        state
            .master
            .set_receipt(receipt_request(user_id, &room_id, "m.read.private", event_id, None))
            .await?;
    }
    Ok(Json(json!({})))
}

/// The fully-read marker is room account data; the event must be one of the room's, and the
/// user must be in it (account data alone would not check either).
async fn set_fully_read(
    state: &ClientState,
    user_id: &OwnedUserId,
    room_id: &OwnedRoomId,
    event_id: &OwnedEventId,
) -> MatrixResult<()> {
    {
        let mut conn = state.db.conn().await?;
        let room = access::joined_room(&mut conn, room_id.as_str(), user_id.as_str()).await?;
        let event = state.caches.event_by_id(&mut conn, event_id.as_str()).await?;
        if event.is_none_or(|event| event.row.room_nid != room.room_nid) {
            return Err(MatrixError::not_found("Event not found in this room"));
        }
    }
    let content = json!({ "event_id": event_id });
    let request = SetAccountData {
        user_id: user_id.clone(),
        room_id: Some(room_id.clone()),
        data_type: "m.fully_read".to_owned(),
        content,
    };
    state.master.set_account_data(request).await?;
    Ok(())
}

fn receipt_request(
    user_id: &OwnedUserId,
    room_id: &OwnedRoomId,
    receipt_type: &str,
    event_id: &OwnedEventId,
    thread_id: Option<String>,
) -> SetReceipt {
    SetReceipt {
        user_id: user_id.clone(),
        room_id: room_id.clone(),
        receipt_type: receipt_type.to_owned(),
        event_id: event_id.clone(),
        thread_id,
        ts: None,
    }
}
