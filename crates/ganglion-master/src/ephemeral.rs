//! Writes to the typing, receipts and account-data streams.

use std::{sync::Arc, time::Duration};

use ganglion_events::{
    ignored_users,
    ruma::{OwnedEventId, OwnedRoomId, OwnedUserId},
};
use ganglion_replication::StreamRow;
use ganglion_rpc::{MasterError, MasterResult};
use ganglion_storage::{rooms as room_store, streams as stream_store};
use ganglion_types::{HasErrorClass, StreamKind, StreamPosition};
use serde_json::Value;

use crate::{MasterService, internal};

async fn require_joined(
    svc: &MasterService,
    user_id: &OwnedUserId,
    room_id: &OwnedRoomId,
) -> MasterResult<ganglion_types::RoomNid> {
    let mut conn = svc.db.conn().await.map_err(internal)?;
    let Some(room) = room_store::room_by_id(&mut conn, room_id.as_str()).await.map_err(internal)? else {
        return Err(MasterError::not_found("Unknown room"));
    };
    let membership = room_store::membership_of_user_in_room(&mut conn, room.room_nid, user_id.as_str())
        .await
        .map_err(internal)?;
    if membership.as_ref().map(|m| m.membership.as_str()) != Some("join") {
        return Err(MasterError::forbidden("You are not in this room"));
    }
    Ok(room.room_nid)
}

pub(crate) async fn set_typing(
    svc: &MasterService,
    user_id: &OwnedUserId,
    room_id: &OwnedRoomId,
    typing: bool,
    timeout_ms: u64,
) -> MasterResult<()> {
    require_joined(svc, user_id, room_id).await?;
    if let Some(position) =
        svc.typing.set(room_id.as_str(), user_id.as_str(), typing, Duration::from_millis(timeout_ms))
    {
        svc.bus.publish(StreamRow::new(StreamKind::Typing, position, Some(room_id.as_str()), Vec::new()));
    }
    Ok(())
}

pub(crate) async fn set_receipt(
    svc: &MasterService,
    user_id: &OwnedUserId,
    room_id: &OwnedRoomId,
    receipt_type: &str,
    event_id: &OwnedEventId,
    thread_id: Option<String>,
) -> MasterResult<()> {
    // A thread id is `main` or an event id; longer ones would not fit PostgreSQL's index either.
    if thread_id.as_ref().is_some_and(|thread_id| thread_id.len() > ganglion_events::MAX_EVENT_FIELD_BYTES) {
        return Err(MasterError::invalid_param(format!(
            "`thread_id` is longer than the maximum of {} bytes",
            ganglion_events::MAX_EVENT_FIELD_BYTES
        )));
    }
    let room_nid = require_joined(svc, user_id, room_id).await?;
    {
        let mut conn = svc.db.conn().await.map_err(internal)?;
        let event =
            ganglion_storage::events::event_by_id(&mut conn, event_id.as_str()).await.map_err(internal)?;
        if event.is_none_or(|event| event.room_nid != room_nid) {
            return Err(MasterError::not_found("Event not found in this room"));
        }
    }
    let mut writer = svc.writer.lock().await;
    let position = writer.last_receipt_pos + 1;
    let mut conn = svc.db.conn().await.map_err(internal)?;
    let receipt = stream_store::ReceiptRow {
        room_id: room_id.to_string(),
        user_id: user_id.to_string(),
        receipt_type: receipt_type.to_owned(),
        thread_id: thread_id.unwrap_or_default(),
        event_id: event_id.to_string(),
        ts: ganglion_storage::now_ms(),
        stream_pos: position,
    };
    stream_store::upsert_receipt(&mut conn, &receipt).await.map_err(internal)?;
    writer.last_receipt_pos = position;
    svc.bus.publish(StreamRow::receipt(receipt));
    Ok(())
}

pub(crate) async fn set_account_data(
    svc: &MasterService,
    user_id: &OwnedUserId,
    room_id: Option<&OwnedRoomId>,
    data_type: &str,
    content: Value,
) -> MasterResult<()> {
    if !content.is_object() {
        return Err(MasterError::bad_json("Account data must be a JSON object"));
    }
    if data_type.is_empty() {
        return Err(MasterError::invalid_param("Account data type must not be empty"));
    }
    // An event type, so held to the same 255 bytes (it is also part of a unique index).
    if data_type.len() > ganglion_events::MAX_EVENT_FIELD_BYTES {
        return Err(MasterError::invalid_param(format!(
            "Account data type is longer than the maximum of {} bytes",
            ganglion_events::MAX_EVENT_FIELD_BYTES
        )));
    }
    if matches!(data_type, "m.fully_read" | "m.push_rules") && room_id.is_none() {
        return Err(MasterError::new(
            ganglion_types::ErrorClass::BadJson,
            format!("Cannot set {data_type} through this API"),
        ));
    }
    if room_id.is_none() && data_type == ignored_users::IGNORED_USER_LIST {
        ignored_users::check_ignored_user_list(&content, user_id.as_str())
            .map_err(|error| MasterError::new(error.class(), error.to_string()))?;
    }
    let text = serde_json::to_string(&content).map_err(|e| MasterError::bad_json(e.to_string()))?;
    let mut writer = svc.writer.lock().await;
    let position = writer.last_account_data_pos + 1;
    let mut conn = svc.db.conn().await.map_err(internal)?;
    let room = room_id.map(|room| room.as_str()).unwrap_or("");
    stream_store::upsert_account_data(&mut conn, user_id.as_str(), room, data_type, &text, position)
        .await
        .map_err(internal)?;
    writer.last_account_data_pos = position;
    let user_ids = vec![Arc::from(user_id.as_str())];
    svc.bus.publish(StreamRow::new(StreamKind::AccountData, StreamPosition(position), None, user_ids));
    Ok(())
}
