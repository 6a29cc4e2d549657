//! End-to-end encryption keys and to-device messages: the master checks every upload against
//! what it stores (signatures, ownership, conflicts) and writes the `device_lists` and
//! `to_device` streams.

use std::{collections::BTreeMap, sync::Arc};

use ganglion_events::ruma::{
    DeviceId, OwnedDeviceId, OwnedUserId, UserId, encryption::KeyUsage, to_device::DeviceIdOrAllDevices,
};
use ganglion_keys::Ed25519PublicKey;
use ganglion_replication::StreamRow;
use ganglion_rpc::{
    ClaimKeys, ClaimedKey, MasterError, MasterResult, OneTimeKeyCounts, SendToDevice, SignatureFailure,
    UploadKeys, UploadSignatures, UploadSigningKeys,
};
use ganglion_storage::{
    Conn, StorageError, accounts as account_store,
    keys::{self as key_store, CrossSigningKeyType, KeySignatureRow},
    rooms as room_store,
    to_device::{self as to_device_store, ToDeviceRow},
};
use ganglion_types::{StreamKind, StreamPosition};
use serde_json::Value;

use crate::{MasterService, internal, writer::Writer};

fn committed(error: sqlx::Error) -> MasterError {
    internal(StorageError::from(error))
}

/// Allocates the next `device_lists` position for `user_id` and records the change in `conn`
/// (the caller's transaction, under the writer lock). After the commit, the caller sets
/// `writer.last_device_list_pos` to the row's position and publishes it.
pub(crate) async fn device_list_changed(
    writer: &Writer,
    conn: &mut Conn,
    user_id: &str,
) -> MasterResult<StreamRow> {
    let row = record_device_list_change(writer, conn, user_id).await?;
    device_list_update_edus(conn, user_id, row.position.0).await?;
    Ok(row)
}

/// Tells every other server sharing a room with our `user_id` that their device list changed
/// (`m.device_list_update`, queued in `conn`). No `prev_id` and no keys: the receiving server
/// asks `/user/devices` again (Synapse resyncs whenever `prev_id` is empty), so it never
/// applies a change it cannot place.
async fn device_list_update_edus(conn: &mut Conn, user_id: &str, stream_id: i64) -> MasterResult<()> {
    let Some((_, own_server)) = user_id.split_once(':') else { return Ok(()) };
    let remote =
        room_store::remote_users_sharing_a_room_with(conn, user_id, own_server).await.map_err(internal)?;
    let servers: std::collections::BTreeSet<&str> =
        remote.iter().filter_map(|user| user.split_once(':').map(|(_, server)| server)).collect();
    if servers.is_empty() {
        return Ok(());
    }
    let content = serde_json::json!({
        "user_id": user_id,
        "device_id": "",
        "stream_id": stream_id,
        "prev_id": [],
    })
    .to_string();
    let edus: Vec<(String, String, String)> = servers
        .into_iter()
        .map(|server| (server.to_owned(), "m.device_list_update".to_owned(), content.clone()))
        .collect();
    ganglion_storage::federation::insert_outbox_edus(conn, &edus, ganglion_storage::now_ms())
        .await
        .map_err(internal)
}

/// Another server's users whose device lists changed (`m.device_list_update`): a row each, so
/// our users sharing a room with them see them in `device_lists.changed` and query their keys
/// again (always from their server). Users sharing no room with ours are skipped.
pub(crate) async fn remote_device_lists_changed(
    svc: &MasterService,
    user_ids: Vec<OwnedUserId>,
) -> MasterResult<()> {
    let remote: Vec<OwnedUserId> =
        user_ids.into_iter().filter(|user| user.server_name().as_str() != svc.config.server_name).collect();
    if remote.is_empty() {
        return Ok(());
    }
    let mut writer = svc.writer.lock().await;
    for user_id in &remote {
        let mut tx = svc.db.begin().await.map_err(internal)?;
        if room_store::room_ids_shared_by_user(&mut tx, user_id.as_str()).await.map_err(internal)?.is_empty()
        {
            continue;
        }
        let row = record_device_list_change(&writer, &mut tx, user_id.as_str()).await?;
        tx.commit().await.map_err(committed)?;
        publish_device_list_row(svc, &mut writer, row);
    }
    Ok(())
}

async fn record_device_list_change(
    writer: &Writer,
    conn: &mut Conn,
    user_id: &str,
) -> MasterResult<StreamRow> {
    let position = writer.last_device_list_pos + 1;
    key_store::insert_device_list_change(conn, user_id, position).await.map_err(internal)?;
    // Room-mates' long-polls wait on their rooms: the row wakes the user's rooms and the user.
    let mut keys: Vec<Arc<str>> = room_store::room_ids_shared_by_user(conn, user_id)
        .await
        .map_err(internal)?
        .into_iter()
        .map(Arc::from)
        .collect();
    keys.push(Arc::from(user_id));
    Ok(StreamRow::new(StreamKind::DeviceLists, StreamPosition(position), None, keys))
}

/// Publishes a committed device-list row and moves the writer past it.
pub(crate) fn publish_device_list_row(svc: &MasterService, writer: &mut Writer, row: StreamRow) {
    writer.last_device_list_pos = row.position.0;
    svc.bus.publish(row);
}

/// The ed25519 key of a device's stored keys, if it has uploaded them.
fn stored_ed25519_key(stored: &str, device_id: &DeviceId) -> Option<Ed25519PublicKey> {
    let value: Value = serde_json::from_str(stored).ok()?;
    let encoded = value.get("keys")?.get(format!("ed25519:{device_id}"))?.as_str()?;
    Ed25519PublicKey::parse(encoded).ok()
}

fn storage_keys(keys: Vec<ganglion_keys::OneTimeKey>) -> Vec<key_store::OneTimeKey> {
    keys.into_iter()
        .map(|key| {
            let (algorithm, key_id) =
                key.key_id.as_str().split_once(':').unwrap_or(("", key.key_id.as_str()));
            key_store::OneTimeKey {
                algorithm: algorithm.to_owned(),
                key_id: key_id.to_owned(),
                key_json: key.json,
            }
        })
        .collect()
}

pub(crate) async fn upload_keys(svc: &MasterService, request: UploadKeys) -> MasterResult<OneTimeKeyCounts> {
    let (user_id, device_id) = (request.user_id.as_str(), request.device_id.as_str());
    let mut conn = svc.db.conn().await.map_err(internal)?;
    let stored = key_store::device_keys_json(&mut conn, user_id, device_id).await.map_err(internal)?;
    let mut ed25519_key = stored.as_deref().and_then(|stored| stored_ed25519_key(stored, &request.device_id));
    let mut new_device_keys = None;
    if let Some(device_keys) = &request.device_keys {
        let checked = ganglion_keys::check_device_keys(device_keys, &request.user_id, &request.device_id)
            .map_err(internal)?;
        match stored.as_deref() {
            // A client that lost the answer retries with the same keys.
            Some(stored) => {
                let stored: Value =
                    serde_json::from_str(stored).map_err(|e| MasterError::internal(e.to_string()))?;
                ganglion_keys::check_same_key(device_keys, &stored).map_err(|_| {
                    MasterError::invalid_param(format!(
                        "Device {device_id} already has different keys; a device's identity keys cannot change"
                    ))
                })?;
            }
            None => new_device_keys = Some(checked.json),
        }
        ed25519_key = Some(checked.ed25519_key);
    }
    let one_time_keys = match &request.one_time_keys {
        Some(keys) => ganglion_keys::check_one_time_keys(
            keys,
            &request.user_id,
            &request.device_id,
            ed25519_key.as_ref(),
        )
        .map_err(internal)?,
        None => Vec::new(),
    };
    let fallback_keys = match &request.fallback_keys {
        Some(keys) => ganglion_keys::check_fallback_keys(
            keys,
            &request.user_id,
            &request.device_id,
            ed25519_key.as_ref(),
        )
        .map_err(internal)?,
        None => Vec::new(),
    };
    drop(conn);

    // Only new device keys move a stream; other uploads stay off the writer lock.
    let mut writer = match new_device_keys {
        Some(_) => Some(svc.writer.lock().await),
        None => None,
    };
    let mut tx = svc.db.begin().await.map_err(internal)?;
    let conflicts =
        key_store::insert_one_time_keys(&mut tx, user_id, device_id, &storage_keys(one_time_keys))
            .await
            .map_err(internal)?;
    if let Some(conflict) = conflicts.first() {
        return Err(MasterError::invalid_param(format!(
            "One-time key {}:{} already exists with a different value",
            conflict.algorithm, conflict.key_id
        )));
    }
    for key in storage_keys(fallback_keys) {
        key_store::upsert_fallback_key(&mut tx, user_id, device_id, &key).await.map_err(internal)?;
    }
    let mut row = None;
    if let (Some(json), Some(writer)) = (&new_device_keys, &writer) {
        key_store::upsert_device_keys(&mut tx, user_id, device_id, json).await.map_err(internal)?;
        row = Some(device_list_changed(writer, &mut tx, user_id).await?);
    }
    tx.commit().await.map_err(committed)?;
    if let (Some(row), Some(writer)) = (row, writer.as_mut()) {
        publish_device_list_row(svc, writer, row);
    }
    drop(writer);
    key_counts_changed(svc, user_id, device_id);
    svc.bus.flushed().await;

    let mut conn = svc.db.conn().await.map_err(internal)?;
    one_time_key_counts(&mut conn, user_id, device_id).await
}

/// A device's one-time or fallback keys changed: every process's cached counts are stale. The
/// caller awaits `bus.flushed()` before answering, so the device's next sync sees the change.
fn key_counts_changed(svc: &MasterService, user_id: &str, device_id: &str) {
    svc.caches.forget_key_counts(user_id, device_id);
    svc.bus.invalidate(ganglion_replication::Invalidation::KeyCounts {
        user_id: Arc::from(user_id),
        device_id: Arc::from(device_id),
    });
}

/// A device's unclaimed one-time keys by algorithm; `signed_curve25519` is always there, as
/// clients decide from it whether to upload more.
pub(crate) async fn one_time_key_counts(
    conn: &mut Conn,
    user_id: &str,
    device_id: &str,
) -> MasterResult<OneTimeKeyCounts> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::from([("signed_curve25519".to_owned(), 0)]);
    for (algorithm, count) in
        key_store::one_time_key_counts(conn, user_id, device_id).await.map_err(internal)?
    {
        counts.insert(algorithm, count.max(0) as u64);
    }
    Ok(OneTimeKeyCounts(counts))
}

pub(crate) async fn claim_keys(svc: &MasterService, request: ClaimKeys) -> MasterResult<Vec<ClaimedKey>> {
    let mut conn = svc.db.conn().await.map_err(internal)?;
    let mut claimed = Vec::new();
    let mut changed_any = false;
    for claim in request.claims {
        if claim.user_id.server_name() != svc.config.server_name.as_str() {
            continue;
        }
        let (user_id, device_id) = (claim.user_id.as_str(), claim.device_id.as_str());
        let key = match key_store::claim_one_time_key(&mut conn, user_id, device_id, &claim.algorithm)
            .await
            .map_err(internal)?
        {
            Some(key) => Some(key),
            None => key_store::claim_fallback_key(&mut conn, user_id, device_id, &claim.algorithm)
                .await
                .map_err(internal)?,
        };
        if let Some(key) = key {
            key_counts_changed(svc, user_id, device_id);
            changed_any = true;
            let value =
                serde_json::from_str(&key.key_json).map_err(|e| MasterError::internal(e.to_string()))?;
            claimed.push(ClaimedKey {
                user_id: claim.user_id,
                device_id: claim.device_id,
                key_id: format!("{}:{}", key.algorithm, key.key_id),
                key: value,
            });
        }
    }
    if changed_any {
        svc.bus.flushed().await;
    }
    Ok(claimed)
}

/// The user's stored cross-signing key of `key_type`, as JSON.
async fn stored_cross_signing_key(
    conn: &mut Conn,
    user_id: &str,
    key_type: CrossSigningKeyType,
) -> MasterResult<Option<Value>> {
    let rows = key_store::cross_signing_keys_of_users(conn, &[user_id.to_owned()]).await.map_err(internal)?;
    rows.into_iter()
        .find(|row| row.key_type == key_type)
        .map(|row| serde_json::from_str(&row.keys_json).map_err(|e| MasterError::internal(e.to_string())))
        .transpose()
}

/// The public key of a stored cross-signing key.
fn cross_signing_public_key(
    key: &Value,
    user_id: &UserId,
    usage: KeyUsage,
) -> MasterResult<Ed25519PublicKey> {
    let name = usage.as_str().to_owned();
    ganglion_keys::check_cross_signing_key(key, user_id, usage, None)
        .map(|key| key.public_key)
        .map_err(|e| MasterError::internal(format!("stored {name} key: {e}")))
}

pub(crate) async fn upload_signing_keys(svc: &MasterService, request: UploadSigningKeys) -> MasterResult<()> {
    let user_id = &request.user_id;
    let mut conn = svc.db.conn().await.map_err(internal)?;
    let existing_master =
        match stored_cross_signing_key(&mut conn, user_id.as_str(), CrossSigningKeyType::Master).await? {
            Some(key) => Some(cross_signing_public_key(&key, user_id, KeyUsage::Master)?),
            None => None,
        };
    let keys = ganglion_keys::check_cross_signing_keys(
        request.master_key.as_ref(),
        request.self_signing_key.as_ref(),
        request.user_signing_key.as_ref(),
        user_id,
        existing_master.as_ref(),
    )
    .map_err(internal)?;
    // A cross-signing key named like a device would make key ids ambiguous.
    for public_key in keys.public_keys() {
        if account_store::device(&mut conn, user_id.as_str(), &public_key).await.map_err(internal)?.is_some()
        {
            return Err(MasterError::forbidden(
                "A cross-signing key may not have the id of one of your devices",
            ));
        }
    }
    drop(conn);
    let uploads = [
        (CrossSigningKeyType::Master, keys.master),
        (CrossSigningKeyType::SelfSigning, keys.self_signing),
        (CrossSigningKeyType::UserSigning, keys.user_signing),
    ];
    if uploads.iter().all(|(_, key)| key.is_none()) {
        return Ok(());
    }
    let mut writer = svc.writer.lock().await;
    let mut tx = svc.db.begin().await.map_err(internal)?;
    for (key_type, key) in uploads {
        if let Some(key) = key {
            key_store::upsert_cross_signing_key(&mut tx, user_id.as_str(), key_type, &key.json)
                .await
                .map_err(internal)?;
        }
    }
    let row = device_list_changed(&writer, &mut tx, user_id.as_str()).await?;
    tx.commit().await.map_err(committed)?;
    publish_device_list_row(svc, &mut writer, row);
    Ok(())
}

pub(crate) async fn upload_signatures(
    svc: &MasterService,
    request: UploadSignatures,
) -> MasterResult<Vec<SignatureFailure>> {
    let Some(body) = request.signatures.as_object() else {
        return Err(MasterError::bad_json("The body must be an object of user ids"));
    };
    let signer = &request.user_id;
    let mut conn = svc.db.conn().await.map_err(internal)?;
    let own_key =
        async |conn: &mut Conn, key_type, usage| -> MasterResult<Option<(String, Ed25519PublicKey)>> {
            Ok(match stored_cross_signing_key(conn, signer.as_str(), key_type).await? {
                Some(key) => {
                    let public_key = cross_signing_public_key(&key, signer, usage)?;
                    Some((format!("ed25519:{}", public_key.encode()), public_key))
                }
                None => None,
            })
        };
    let self_signing = own_key(&mut conn, CrossSigningKeyType::SelfSigning, KeyUsage::SelfSigning).await?;
    let user_signing = own_key(&mut conn, CrossSigningKeyType::UserSigning, KeyUsage::UserSigning).await?;

    let mut accepted = Vec::new();
    let mut failures = Vec::new();
    for (target_user, by_key) in body {
        let Some(by_key) = by_key.as_object() else {
            return Err(MasterError::bad_json(format!("signatures for {target_user} must be an object")));
        };
        let target = match UserId::parse(target_user) {
            Ok(target) => target,
            Err(_) => return Err(MasterError::invalid_param(format!("{target_user} is not a user id"))),
        };
        for (target_key_id, uploaded) in by_key {
            let result = signature_of(
                &mut conn,
                signer,
                &target,
                target_key_id,
                uploaded,
                &self_signing,
                &user_signing,
            )
            .await;
            match result {
                Ok(signatures) => accepted.extend(signatures),
                Err(error) => failures.push(SignatureFailure {
                    user_id: target_user.clone(),
                    key_id: target_key_id.clone(),
                    error,
                }),
            }
        }
    }
    drop(conn);
    if !accepted.is_empty() {
        let mut writer = svc.writer.lock().await;
        let mut tx = svc.db.begin().await.map_err(internal)?;
        for signature in &accepted {
            key_store::upsert_key_signature(&mut tx, signature).await.map_err(internal)?;
        }
        // The signer's devices (and, for their own keys, room-mates) must query again.
        let row = device_list_changed(&writer, &mut tx, signer.as_str()).await?;
        tx.commit().await.map_err(committed)?;
        publish_device_list_row(svc, &mut writer, row);
    }
    Ok(failures)
}

/// The signatures by `signer` on one uploaded key that verify: on one of the signer's own
/// devices (by the self-signing key), on the signer's own master key (by one of its devices),
/// or on another user's master key (by the user-signing key).
async fn signature_of(
    conn: &mut Conn,
    signer: &OwnedUserId,
    target: &UserId,
    target_key_id: &str,
    uploaded: &Value,
    self_signing: &Option<(String, Ed25519PublicKey)>,
    user_signing: &Option<(String, Ed25519PublicKey)>,
) -> MasterResult<Vec<KeySignatureRow>> {
    let signed_by = |key_id: &str| {
        uploaded
            .get("signatures")
            .and_then(|signatures| signatures.get(signer.as_str()))
            .and_then(|keys| keys.get(key_id))
            .is_some()
    };
    let row = |signer_key_id: &str, signature: String| KeySignatureRow {
        signer_user_id: signer.to_string(),
        signer_key_id: signer_key_id.to_owned(),
        target_user_id: target.to_string(),
        target_key_id: target_key_id.to_owned(),
        signature,
    };
    let master = stored_cross_signing_key(conn, target.as_str(), CrossSigningKeyType::Master).await?;
    let master_public = match &master {
        Some(key) => Some(cross_signing_public_key(key, target, KeyUsage::Master)?.encode()),
        None => None,
    };
    if target.as_str() == signer.as_str() && master_public.as_deref() != Some(target_key_id) {
        // One of the signer's devices, signed by the self-signing key.
        let stored =
            key_store::device_keys_json(conn, target.as_str(), target_key_id).await.map_err(internal)?;
        let Some(stored) = stored else {
            return Err(MasterError::not_found(format!("Unknown device {target_key_id}")));
        };
        let Some((key_id, public_key)) = self_signing else {
            return Err(MasterError::invalid_param("Upload a self-signing key before signing your devices"));
        };
        if !signed_by(key_id) {
            return Err(MasterError::invalid_param(format!(
                "No signature by your self-signing key {key_id}"
            )));
        }
        let stored: Value =
            serde_json::from_str(&stored).map_err(|e| MasterError::internal(e.to_string()))?;
        let signature = ganglion_keys::uploaded_signature(signer, key_id, public_key, uploaded, &stored)
            .map_err(internal)?;
        return Ok(vec![row(key_id, signature)]);
    }
    let (Some(master), Some(_)) = (&master, &master_public) else {
        return Err(MasterError::not_found(format!("{target} has no key {target_key_id}")));
    };
    if target.as_str() == signer.as_str() {
        // The signer's own master key, signed by its devices.
        let mut rows = Vec::new();
        let devices = uploaded
            .get("signatures")
            .and_then(|signatures| signatures.get(signer.as_str()))
            .and_then(Value::as_object)
            .map(|keys| keys.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        for key_id in devices {
            let Some(device_id) = key_id.strip_prefix("ed25519:") else { continue };
            if device_id == target_key_id {
                continue;
            }
            let stored =
                key_store::device_keys_json(conn, signer.as_str(), device_id).await.map_err(internal)?;
            let Some(public_key) = stored
                .as_deref()
                .and_then(|stored| stored_ed25519_key(stored, &OwnedDeviceId::from(device_id)))
            else {
                continue;
            };
            let signature = ganglion_keys::uploaded_signature(signer, &key_id, &public_key, uploaded, master)
                .map_err(internal)?;
            rows.push(row(&key_id, signature));
        }
        if rows.is_empty() {
            return Err(MasterError::invalid_param("No signature by one of your devices"));
        }
        return Ok(rows);
    }
    // Another user's master key, signed by the signer's user-signing key.
    let Some((key_id, public_key)) = user_signing else {
        return Err(MasterError::invalid_param("Upload a user-signing key before signing other users"));
    };
    if !signed_by(key_id) {
        return Err(MasterError::invalid_param(format!("No signature by your user-signing key {key_id}")));
    }
    let signature =
        ganglion_keys::uploaded_signature(signer, key_id, public_key, uploaded, master).map_err(internal)?;
    Ok(vec![row(key_id, signature)])
}

pub(crate) async fn send_to_device(svc: &MasterService, request: SendToDevice) -> MasterResult<()> {
    let messages =
        ganglion_keys::check_to_device_messages(&request.sender, &request.event_type, &request.body)
            .map_err(internal)?;
    let mut conn = svc.db.conn().await.map_err(internal)?;
    let local_sender = request.sender.server_name().as_str() == svc.config.server_name;
    // Resolved before taking the writer lock: recipients by device; other servers' users get one
    // EDU per server, from local senders only (a message from another server is never relayed).
    let mut deliveries = Vec::new();
    let mut remote: BTreeMap<String, serde_json::Map<String, serde_json::Value>> = BTreeMap::new();
    for message in messages {
        if message.user_id.server_name() != svc.config.server_name.as_str() {
            if local_sender {
                let device = match &message.device {
                    DeviceIdOrAllDevices::AllDevices => "*".to_owned(),
                    DeviceIdOrAllDevices::DeviceId(device_id) => device_id.to_string(),
                };
                let content: serde_json::Value = serde_json::from_str(&message.content)
                    .map_err(|e| MasterError::internal(e.to_string()))?;
                let users = remote.entry(message.user_id.server_name().to_string()).or_default();
                let devices =
                    users.entry(message.user_id.to_string()).or_insert_with(|| serde_json::json!({}));
                devices[device] = content;
            }
            continue;
        }
        let devices =
            account_store::devices_of_user(&mut conn, message.user_id.as_str()).await.map_err(internal)?;
        for device in devices {
            let wanted = match &message.device {
                DeviceIdOrAllDevices::AllDevices => true,
                DeviceIdOrAllDevices::DeviceId(device_id) => device_id.as_str() == device.device_id,
            };
            if wanted {
                deliveries.push((message.user_id.to_string(), device.device_id, message.content.clone()));
            }
        }
    }
    drop(conn);

    let mut writer = svc.writer.lock().await;
    let mut tx = svc.db.begin().await.map_err(internal)?;
    let new = to_device_store::insert_to_device_txn(
        &mut tx,
        request.sender.as_str(),
        request.sender_device.as_str(),
        &request.txn_id,
    )
    .await
    .map_err(internal)?;
    if !new {
        // A retry of a request already delivered.
        return Ok(());
    }
    let first = writer.last_to_device_pos + 1;
    let rows: Vec<ToDeviceRow> = deliveries
        .into_iter()
        .enumerate()
        .map(|(index, (user_id, device_id, content_json))| {
            let stream_pos = first + index as i64;
            ToDeviceRow {
                stream_pos,
                user_id,
                device_id,
                sender: request.sender.to_string(),
                event_type: request.event_type.clone(),
                content_json,
                message_id: format!("{}_{stream_pos}", request.sender_device),
            }
        })
        .collect();
    to_device_store::insert_to_device_messages(&mut tx, &rows).await.map_err(internal)?;
    // The message id other servers deduplicate by: unique per sender, as the client's transaction
    // id is per device (a retry with the same one stopped above).
    let message_id = format!("{}:{}", request.sender_device, request.txn_id);
    let edus: Vec<(String, String, String)> = remote
        .into_iter()
        .map(|(destination, messages)| {
            let content = serde_json::json!({
                "sender": request.sender,
                "type": request.event_type,
                "message_id": message_id,
                "messages": messages,
            });
            (destination, "m.direct_to_device".to_owned(), content.to_string())
        })
        .collect();
    ganglion_storage::federation::insert_outbox_edus(&mut tx, &edus, ganglion_storage::now_ms())
        .await
        .map_err(internal)?;
    tx.commit().await.map_err(committed)?;
    if let Some(last) = rows.last() {
        writer.last_to_device_pos = last.stream_pos;
    }
    let published = rows
        .iter()
        .map(|row| {
            StreamRow::new(
                StreamKind::ToDevice,
                StreamPosition(row.stream_pos),
                None,
                vec![Arc::from(row.user_id.as_str())],
            )
        })
        .collect();
    svc.bus.publish_all(published);
    Ok(())
}

/// Deletes a removed device's keys and pending to-device messages, in the caller's transaction.
/// True when the device had keys: its user's device list changed for room-mates.
pub(crate) async fn forget_device(conn: &mut Conn, user_id: &str, device_id: &str) -> MasterResult<bool> {
    let had_keys = key_store::device_keys_json(conn, user_id, device_id).await.map_err(internal)?.is_some();
    key_store::delete_keys_of_device(conn, user_id, device_id).await.map_err(internal)?;
    to_device_store::delete_to_device_messages_of_device(conn, user_id, device_id).await.map_err(internal)?;
    Ok(had_keys)
}
