//! Writes to the typing, receipts and account-data streams. Our users' typing and read
//! receipts in rooms shared with other servers are queued for those servers (`m.typing`,
//! `m.receipt`); other servers' users' come in through the same calls and are never sent on.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use ganglion_events::{
    ignored_users, push_rules,
    ruma::{OwnedRoomId, OwnedUserId, UserId},
};
use ganglion_replication::StreamRow;
use ganglion_rpc::{MasterError, MasterResult, SetReceipt};
use ganglion_storage::{rooms as room_store, streams as stream_store};
use ganglion_types::{HasErrorClass, StreamKind, StreamPosition};
use serde_json::{Value, json};

use crate::{MasterService, internal};

/// Whether `user_id` is one of our users: only theirs are sent to other servers.
pub(crate) fn is_ours(svc: &MasterService, user_id: &UserId) -> bool {
    user_id.server_name().as_str() == svc.config.server_name
}

/// The servers of `users` (user ids as stored), once each.
pub(crate) fn servers_of(users: &[String]) -> BTreeSet<String> {
    users
        .iter()
        .filter_map(|user| OwnedUserId::try_from(user.as_str()).ok())
        .map(|user| user.server_name().to_string())
        .collect()
}

/// The other servers with a user joined to the room: one indexed query, empty for the usual
/// room of our users only.
async fn remote_servers_of_room(
    svc: &MasterService,
    conn: &mut ganglion_storage::Conn,
    room_nid: ganglion_types::RoomNid,
) -> MasterResult<BTreeSet<String>> {
    let users = room_store::remote_joined_members_of_room(conn, room_nid, &svc.config.server_name)
        .await
        .map_err(internal)?;
    Ok(servers_of(&users))
}

/// `(destination, edu type, content)` rows of one EDU for each of `servers`.
fn edus_for(servers: BTreeSet<String>, edu_type: &str, content: &Value) -> Vec<(String, String, String)> {
    let content = content.to_string();
    servers.into_iter().map(|server| (server, edu_type.to_owned(), content.clone())).collect()
}

/// Queues our users' typing in a room, `(user, typing)`, for the other servers in it.
async fn queue_typing(
    svc: &MasterService,
    room_nid: ganglion_types::RoomNid,
    room_id: &str,
    changes: &[(&str, bool)],
) -> MasterResult<()> {
    let mut conn = svc.db.conn().await.map_err(internal)?;
    let servers = remote_servers_of_room(svc, &mut conn, room_nid).await?;
    if servers.is_empty() {
        return Ok(());
    }
    let mut edus = Vec::with_capacity(servers.len() * changes.len());
    for (user_id, typing) in changes {
        let content = json!({ "room_id": room_id, "user_id": user_id, "typing": typing });
        edus.extend(edus_for(servers.clone(), "m.typing", &content));
    }
    ganglion_storage::federation::insert_outbox_edus(&mut conn, &edus, ganglion_storage::now_ms())
        .await
        .map_err(internal)
}

/// Tells the other servers in the room that those of `users` who are ours, whose typing timed
/// out here, stopped: theirs would otherwise show them typing until their own timeout.
pub(crate) async fn typing_expired(svc: &MasterService, room_id: &str, users: &[String]) {
    let ours: Vec<(&str, bool)> = users
        .iter()
        .filter(|user| OwnedUserId::try_from(user.as_str()).is_ok_and(|user| is_ours(svc, &user)))
        .map(|user| (user.as_str(), false))
        .collect();
    if ours.is_empty() {
        return;
    }
    let queued = async {
        let mut conn = svc.db.conn().await.map_err(internal)?;
        let room = room_store::room_by_id(&mut conn, room_id).await.map_err(internal)?;
        drop(conn);
        match room {
            Some(room) => queue_typing(svc, room.room_nid, room_id, &ours).await,
            None => Ok(()),
        }
    };
    if let Err(error) = queued.await {
        tracing::warn!(%error, %room_id, "queueing the end of typing for other servers failed");
    }
}

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
    let room_nid = require_joined(svc, user_id, room_id).await?;
    let changed =
        svc.typing.set(room_id.as_str(), user_id.as_str(), typing, Duration::from_millis(timeout_ms));
    if let Some(position) = changed {
        svc.bus.publish(StreamRow::new(StreamKind::Typing, position, Some(room_id.as_str()), Vec::new()));
    }
    // A still-typing user's repeat goes out too: it keeps other servers from timing it out.
    if is_ours(svc, user_id)
        && (typing || changed.is_some())
        && let Err(error) = queue_typing(svc, room_nid, room_id.as_str(), &[(user_id.as_str(), typing)]).await
    {
        // Ephemeral: the change stands here, other servers miss it.
        tracing::warn!(%error, %room_id, "queueing a typing notification for other servers failed");
    }
    Ok(())
}

pub(crate) async fn set_receipt(svc: &MasterService, request: SetReceipt) -> MasterResult<()> {
    let SetReceipt { user_id, room_id, receipt_type, event_id, thread_id, ts } = request;
    let (user_id, room_id, receipt_type, event_id) = (&user_id, &room_id, receipt_type.as_str(), &event_id);
    // A thread id is `main` or an event id; longer ones would not fit PostgreSQL's index either.
    if thread_id.as_ref().is_some_and(|thread_id| thread_id.len() > ganglion_events::MAX_EVENT_FIELD_BYTES) {
        return Err(MasterError::invalid_param(format!(
            "`thread_id` is longer than the maximum of {} bytes",
            ganglion_events::MAX_EVENT_FIELD_BYTES
        )));
    }
    let room_nid = require_joined(svc, user_id, room_id).await?;
    let now = ganglion_storage::now_ms();
    // Another server's receipt keeps the time its user read (never in the future); ours, now.
    let ts = ts.filter(|_| !is_ours(svc, user_id)).map_or(now, |ts| ts.clamp(0, now));
    let edus = {
        let mut conn = svc.db.conn().await.map_err(internal)?;
        let event =
            ganglion_storage::events::event_by_id(&mut conn, event_id.as_str()).await.map_err(internal)?;
        if event.is_none_or(|event| event.room_nid != room_nid) {
            return Err(MasterError::not_found("Event not found in this room"));
        }
        // Only our users' public receipts leave the server (`m.read.private` never does).
        if receipt_type == "m.read" && is_ours(svc, user_id) {
            let servers = remote_servers_of_room(svc, &mut conn, room_nid).await?;
            let mut data = json!({ "ts": ts });
            if let Some(thread_id) = &thread_id {
                data["thread_id"] = json!(thread_id);
            }
            let read = json!({ "event_ids": [event_id], "data": data });
            let content = json!({ room_id.as_str(): { "m.read": { user_id.as_str(): read } } });
            edus_for(servers, "m.receipt", &content)
        } else {
            Vec::new()
        }
    };
    let mut writer = svc.writer.lock().await;
    let position = writer.last_receipt_pos + 1;
    let receipt = stream_store::ReceiptRow {
        room_id: room_id.to_string(),
        user_id: user_id.to_string(),
        receipt_type: receipt_type.to_owned(),
        thread_id: thread_id.unwrap_or_default(),
        event_id: event_id.to_string(),
        ts,
        stream_pos: position,
    };
    if edus.is_empty() {
        let mut conn = svc.db.conn().await.map_err(internal)?;
        stream_store::upsert_receipt(&mut conn, &receipt).await.map_err(internal)?;
    } else {
        // Queued with the receipt, so other servers hear of exactly what was stored.
        let mut tx = svc.db.begin().await.map_err(internal)?;
        stream_store::upsert_receipt(&mut tx, &receipt).await.map_err(internal)?;
        ganglion_storage::federation::insert_outbox_edus(&mut tx, &edus, ts).await.map_err(internal)?;
        tx.commit().await.map_err(|e| internal(ganglion_storage::StorageError::from(e)))?;
    }
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
    let mut conn = svc.db.conn().await.map_err(internal)?;
    let room = room_id.map(|room| room.as_str()).unwrap_or("");
    store_account_data(svc, &mut writer, &mut conn, user_id, room, data_type, &text).await?;
    if room_id.is_none() && data_type == ignored_users::IGNORED_USER_LIST {
        writer.forget_recipient(user_id);
    }
    Ok(())
}

/// The most bytes of a room tag's name: it is a key of account data, as an event type is.
const MAX_TAG_BYTES: usize = 255;

/// Sets (`content: Some`) or removes one of the user's tags on a room in their `m.tag` account
/// data there, under the writer's lock, so concurrent changes of other tags are all kept.
pub(crate) async fn set_room_tag(
    svc: &MasterService,
    user_id: &OwnedUserId,
    room_id: &OwnedRoomId,
    tag: &str,
    content: Option<Value>,
) -> MasterResult<()> {
    if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
        return Err(MasterError::invalid_param(format!("A tag is 1 to {MAX_TAG_BYTES} bytes long")));
    }
    if let Some(content) = &content {
        let Some(object) = content.as_object() else {
            return Err(MasterError::bad_json("A tag's content must be a JSON object"));
        };
        if object.get("order").is_some_and(|order| !order.is_number()) {
            return Err(MasterError::bad_json("A tag's `order` must be a number"));
        }
    }
    let mut writer = svc.writer.lock().await;
    let mut conn = svc.db.conn().await.map_err(internal)?;
    let stored = stream_store::account_data_content(&mut conn, user_id.as_str(), room_id.as_str(), "m.tag")
        .await
        .map_err(internal)?;
    // What is stored was set by a client too (`PUT …/account_data/m.tag`): kept as it is but for
    // the `tags` object, which is made one if it is not.
    let mut data: serde_json::Map<String, Value> =
        stored.and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default();
    let mut tags = match data.remove("tags") {
        Some(Value::Object(tags)) => tags,
        _ => serde_json::Map::new(),
    };
    let changed = match content {
        Some(content) => tags.insert(tag.to_owned(), content.clone()).as_ref() != Some(&content),
        None => tags.remove(tag).is_some(),
    };
    if !changed {
        return Ok(());
    }
    data.insert("tags".to_owned(), Value::Object(tags));
    let text = serde_json::to_string(&data).map_err(|e| MasterError::bad_json(e.to_string()))?;
    store_account_data(svc, &mut writer, &mut conn, user_id, room_id.as_str(), "m.tag", &text).await
}

/// Writes one piece of account data at the next position of its stream and tells the workers.
async fn store_account_data(
    svc: &MasterService,
    writer: &mut crate::writer::Writer,
    conn: &mut ganglion_storage::Conn,
    user_id: &OwnedUserId,
    room: &str,
    data_type: &str,
    text: &str,
) -> MasterResult<()> {
    let position = writer.last_account_data_pos + 1;
    stream_store::upsert_account_data(conn, user_id.as_str(), room, data_type, text, position)
        .await
        .map_err(internal)?;
    writer.last_account_data_pos = position;
    let user_ids = vec![Arc::from(user_id.as_str())];
    svc.bus.publish(StreamRow::new(StreamKind::AccountData, StreamPosition(position), None, user_ids));
    Ok(())
}

/// Applies one change to the user's push rules and stores them as `m.push_rules`. The read and
/// the write happen under the writer's lock, so two changes at once both take effect.
pub(crate) async fn update_push_rules(
    svc: &MasterService,
    user_id: &OwnedUserId,
    change: &push_rules::RuleChange,
) -> MasterResult<()> {
    let mut writer = svc.writer.lock().await;
    let mut conn = svc.db.conn().await.map_err(internal)?;
    let stored = stream_store::account_data_content(&mut conn, user_id.as_str(), "", "m.push_rules")
        .await
        .map_err(internal)?
        .and_then(|text| serde_json::from_str::<Value>(&text).ok());
    let mut ruleset = push_rules::user_ruleset(user_id, stored.as_ref());
    push_rules::apply(&mut ruleset, change)
        .map_err(|error| MasterError::new(error.class(), error.to_string()))?;
    let text = push_rules::push_rules_content(&ruleset).to_string();
    store_account_data(svc, &mut writer, &mut conn, user_id, "", "m.push_rules", &text).await?;
    writer.forget_recipient(user_id);
    Ok(())
}

/// Adds, updates or (`kind: null`) deletes one of the user's pushers, from a `/pushers/set` body
/// the worker checked. A new pusher delivers what notifies the user from now on.
pub(crate) async fn set_pusher(svc: &MasterService, user_id: &OwnedUserId, body: &Value) -> MasterResult<()> {
    let text = |key: &str| body.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut conn = svc.db.conn().await.map_err(internal)?;
    if body.get("kind").is_none_or(Value::is_null) {
        ganglion_storage::pushers::delete_pusher(
            &mut conn,
            user_id.as_str(),
            &text("app_id"),
            &text("pushkey"),
        )
        .await
        .map_err(internal)?;
        return Ok(());
    }
    let row = ganglion_storage::pushers::PusherRow {
        user_id: user_id.to_string(),
        app_id: text("app_id"),
        pushkey: text("pushkey"),
        kind: text("kind"),
        app_display_name: text("app_display_name"),
        device_display_name: text("device_display_name"),
        profile_tag: body.get("profile_tag").and_then(Value::as_str).map(str::to_owned),
        lang: text("lang"),
        data: body.get("data").cloned().unwrap_or_else(|| json!({})).to_string(),
        created_ts: ganglion_storage::now_ms(),
        last_stream_pos: svc.positions.get(StreamKind::Events).0,
    };
    let append = body.get("append").and_then(Value::as_bool).unwrap_or(false);
    let mut tx = svc.db.begin().await.map_err(internal)?;
    ganglion_storage::pushers::upsert_pusher(&mut tx, &row, append).await.map_err(internal)?;
    tx.commit().await.map_err(|e| internal(ganglion_storage::StorageError::from(e)))?;
    Ok(())
}
