//! The typing (`m.typing`), read receipt (`m.receipt`) and presence (`m.presence`) EDUs of
//! another server's users, handed to the master so our users see them in `/sync`.
//!
//! Each entry is taken or dropped on its own: one of another server's users (misattributed), or
//! of a user not joined to the room here (the master checks membership), or of the wrong shape
//! is dropped with a log line. Only a master that cannot take an entry fails the whole transaction, so its
//! origin sends it again.

use ganglion_events::{
    presence::PresenceState,
    ruma::{OwnedEventId, OwnedRoomId, OwnedUserId},
};
use ganglion_http::MatrixError;
use ganglion_rpc::{MasterError, RemotePresence, SetReceipt, SetRemotePresence, SetTyping};
use ganglion_types::ErrorClass;
use serde_json::Value;

use crate::FederationState;

/// How long another server's user shows as typing unless their server says it again (as
/// Synapse's `FEDERATION_TIMEOUT`): their server repeats it while they type, and says when
/// they stop.
const REMOTE_TYPING_TIMEOUT_MS: u64 = 60_000;
/// The most receipts, and users' presence, taken from one EDU: one master call each (receipts),
/// so a transaction's cost stays bounded.
const MAX_ENTRIES_PER_EDU: usize = 1000;

/// `user_id`, when it is a user of `origin`.
fn user_of(origin: &str, user_id: &str) -> Option<OwnedUserId> {
    let user_id = OwnedUserId::try_from(user_id).ok()?;
    (user_id.server_name().as_str() == origin).then_some(user_id)
}

/// The user the field `name` of `object` names, when it is a user of `origin`.
fn user_field(origin: &str, object: &Value, name: &str) -> Option<OwnedUserId> {
    object.get(name).and_then(Value::as_str).and_then(|user_id| user_of(origin, user_id))
}

/// Whether the master's refusal of an entry fails the transaction: it could not take it now.
/// Any other refusal (not joined, unknown event) drops the entry alone.
fn failed(error: MasterError, origin: &str, what: &str) -> Result<(), MatrixError> {
    if matches!(error.class, ErrorClass::Unavailable | ErrorClass::Internal) {
        return Err(MatrixError::new(error.class, error.message));
    }
    tracing::info!(%origin, %error, "{what} was refused");
    Ok(())
}

/// `m.typing`: `{room_id, user_id, typing}`.
pub(crate) async fn typing(
    state: &FederationState,
    origin: &str,
    content: &Value,
) -> Result<(), MatrixError> {
    let room_id =
        content.get("room_id").and_then(Value::as_str).and_then(|id| OwnedRoomId::try_from(id).ok());
    let user_id = user_field(origin, content, "user_id");
    let typing = content.get("typing").and_then(Value::as_bool);
    let (Some(room_id), Some(user_id), Some(typing)) = (room_id, user_id, typing) else {
        tracing::info!(%origin, "dropped a malformed or misattributed typing EDU");
        return Ok(());
    };
    let request = SetTyping { user_id, room_id, typing, timeout_ms: REMOTE_TYPING_TIMEOUT_MS };
    match state.master.set_typing(request).await {
        Ok(()) => Ok(()),
        Err(error) => failed(error, origin, "a typing EDU"),
    }
}

/// `m.receipt`: `{room id: {"m.read": {user id: {event_ids: [id], data: {ts, thread_id?}}}}}`.
/// Receipts of other types are not read.
pub(crate) async fn receipts(
    state: &FederationState,
    origin: &str,
    content: &Value,
) -> Result<(), MatrixError> {
    let Some(rooms) = content.as_object() else {
        tracing::info!(%origin, "a receipt EDU that is not an object was dropped");
        return Ok(());
    };
    let mut receipts = Vec::new();
    for (room_id, types) in rooms {
        let Ok(room_id) = OwnedRoomId::try_from(room_id.as_str()) else {
            tracing::info!(%origin, %room_id, "receipts of a malformed room id were dropped");
            continue;
        };
        let Some(users) = types.get("m.read").and_then(Value::as_object) else { continue };
        for (user_id, receipt) in users {
            let user = user_of(origin, user_id);
            let event_id = receipt
                .get("event_ids")
                .and_then(Value::as_array)
                .and_then(|ids| ids.first())
                .and_then(Value::as_str)
                .and_then(|id| OwnedEventId::try_from(id).ok());
            let (Some(user_id), Some(event_id)) = (user, event_id) else {
                tracing::info!(%origin, %room_id, %user_id, "dropped a malformed or misattributed receipt");
                continue;
            };
            let thread_id = receipt.pointer("/data/thread_id").and_then(Value::as_str).map(str::to_owned);
            receipts.push(SetReceipt {
                user_id,
                room_id: room_id.clone(),
                receipt_type: "m.read".to_owned(),
                event_id,
                thread_id,
                ts: receipt.pointer("/data/ts").and_then(Value::as_i64),
            });
        }
    }
    if receipts.len() > MAX_ENTRIES_PER_EDU {
        let count = receipts.len();
        tracing::info!(%origin, count, "receipts past the {MAX_ENTRIES_PER_EDU}th were dropped");
        receipts.truncate(MAX_ENTRIES_PER_EDU);
    }
    for receipt in receipts {
        if let Err(error) = state.master.set_receipt(receipt).await {
            failed(error, origin, "a receipt")?;
        }
    }
    Ok(())
}

/// `m.presence`: `{push: [{user_id, presence, status_msg?, last_active_ago, currently_active?}]}`,
/// in one master call.
pub(crate) async fn presence(
    state: &FederationState,
    origin: &str,
    content: &Value,
) -> Result<(), MatrixError> {
    let Some(push) = content.get("push").and_then(Value::as_array) else {
        tracing::info!(%origin, "a presence EDU without `push` was dropped");
        return Ok(());
    };
    let mut updates = Vec::with_capacity(push.len().min(MAX_ENTRIES_PER_EDU));
    for entry in push.iter().take(MAX_ENTRIES_PER_EDU) {
        let user_id = user_field(origin, entry, "user_id");
        let presence = entry.get("presence").and_then(Value::as_str).and_then(PresenceState::parse);
        let (Some(user_id), Some(presence)) = (user_id, presence) else {
            tracing::info!(%origin, "dropped a malformed or misattributed presence update");
            continue;
        };
        updates.push(RemotePresence {
            user_id,
            presence,
            status_msg: entry.get("status_msg").and_then(Value::as_str).map(str::to_owned),
            last_active_ago_ms: entry.get("last_active_ago").and_then(Value::as_u64).unwrap_or(0),
            currently_active: entry.get("currently_active").and_then(Value::as_bool).unwrap_or(false),
        });
    }
    if updates.is_empty() {
        return Ok(());
    }
    match state.master.set_remote_presence(SetRemotePresence { updates }).await {
        Ok(()) => Ok(()),
        Err(error) => failed(error, origin, "a presence EDU"),
    }
}

/// `m.device_list_update` and `m.signing_key_update`: `{user_id, …}`. Only who changed is read:
/// our users' clients ask that user's server for the keys again, and this server never keeps
/// another server's device list, so there is nothing to resync.
pub(crate) async fn device_list_update(
    state: &FederationState,
    origin: &str,
    content: &Value,
) -> Result<(), MatrixError> {
    let Some(user_id) = user_field(origin, content, "user_id") else {
        tracing::info!(%origin, "dropped a malformed or misattributed device list EDU");
        return Ok(());
    };
    let request = ganglion_rpc::RemoteDeviceListsChanged { user_ids: vec![user_id] };
    match state.master.remote_device_lists_changed(request).await {
        Ok(()) => Ok(()),
        Err(error) => failed(error, origin, "a device list EDU"),
    }
}
