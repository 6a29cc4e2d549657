//! Account writes: users, devices, access tokens, passwords and filters.

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier, password_hash::SaltString};
use ganglion_events::ruma::{OwnedDeviceId, OwnedUserId, UserId};
use ganglion_rpc::{LoginRequest, MasterError, MasterResult, RegisterRequest, SessionGrant};
use ganglion_storage::{accounts as store, now_ms};
use ganglion_types::ErrorClass;
use rand::Rng;
use serde_json::Value;

use ganglion_replication::StreamRow;

use crate::{MasterService, internal, keys, writer::Writer};

fn random_string(length: usize) -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(length).map(char::from).collect()
}

fn new_access_token() -> String {
    format!("gng_{}", random_string(40))
}

fn new_device_id() -> String {
    random_string(10).to_uppercase()
}

/// Hashes off the async runtime: argon2 is deliberately slow.
async fn hash_password(svc: &MasterService, password: String) -> MasterResult<String> {
    let _permit = svc.hashing.acquire().await.map_err(|e| MasterError::internal(e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
            .map_err(|e| MasterError::internal(e.to_string()))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| MasterError::internal(e.to_string()))
    })
    .await
    .map_err(|e| MasterError::internal(e.to_string()))?
}

/// Whether `password` matches the stored argon2 hash.
async fn verify_password(svc: &MasterService, password: String, hash: String) -> bool {
    let Ok(_permit) = svc.hashing.acquire().await else { return false };
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .unwrap_or(false)
}

pub(crate) async fn register(svc: &MasterService, request: RegisterRequest) -> MasterResult<SessionGrant> {
    let localpart = match request.username {
        Some(username) => username.to_lowercase(),
        None => format!("u{}", random_string(12).to_lowercase()),
    };
    let user_id = UserId::parse(format!("@{localpart}:{}", svc.config.server_name))
        .map_err(|e| MasterError::new(ErrorClass::InvalidUsername, format!("Invalid username: {e}")))?;
    if user_id.is_historical() {
        return Err(MasterError::new(ErrorClass::InvalidUsername, "Username contains invalid characters"));
    }
    let password_hash = match request.password {
        Some(password) => Some(hash_password(svc, password).await?),
        None => None,
    };
    let now = now_ms();
    let mut tx = svc.db.begin().await.map_err(internal)?;
    if !store::insert_user(&mut tx, user_id.as_str(), password_hash.as_deref(), now)
        .await
        .map_err(internal)?
    {
        return Err(MasterError::new(ErrorClass::UserInUse, "User ID already taken"));
    }
    // Clients show a user without a display name as the full user id: start from the localpart.
    let profile = store::Profile { displayname: Some(user_id.localpart().to_owned()), avatar_url: None };
    store::set_profile(&mut tx, user_id.as_str(), &profile).await.map_err(internal)?;
    let grant = if request.inhibit_login {
        SessionGrant { user_id: user_id.clone(), access_token: None, device_id: None }
    } else {
        let device_id = request.device_id.unwrap_or_else(new_device_id);
        let access_token = new_access_token();
        store::upsert_device(
            &mut tx,
            user_id.as_str(),
            &device_id,
            request.initial_device_display_name.as_deref(),
            now,
        )
        .await
        .map_err(internal)?;
        store::insert_access_token(&mut tx, &access_token, user_id.as_str(), &device_id)
            .await
            .map_err(internal)?;
        SessionGrant {
            user_id: user_id.clone(),
            access_token: Some(access_token),
            device_id: Some(device_id.into()),
        }
    };
    tx.commit().await.map_err(|e| internal(ganglion_storage::StorageError::from(e)))?;
    tracing::info!(user_id = %user_id, "registered user");
    Ok(grant)
}

pub(crate) async fn check_password(
    svc: &MasterService,
    user_id: &OwnedUserId,
    password: &str,
) -> MasterResult<bool> {
    let hash = {
        let mut conn = svc.db.conn().await.map_err(internal)?;
        store::password_hash_of_user(&mut conn, user_id.as_str()).await.map_err(internal)?
    };
    Ok(match hash {
        Some(hash) => verify_password(svc, password.to_owned(), hash).await,
        None => false,
    })
}

pub(crate) async fn login(svc: &MasterService, request: LoginRequest) -> MasterResult<SessionGrant> {
    let forbidden = || MasterError::forbidden("Invalid username or password");
    let hash = {
        let mut conn = svc.db.conn().await.map_err(internal)?;
        store::password_hash_of_user(&mut conn, request.user_id.as_str()).await.map_err(internal)?
    };
    let Some(hash) = hash else { return Err(forbidden()) };
    if !verify_password(svc, request.password, hash).await {
        return Err(forbidden());
    }
    let device_id = request.device_id.unwrap_or_else(new_device_id);
    let access_token = new_access_token();
    let mut tx = svc.db.begin().await.map_err(internal)?;
    store::upsert_device(
        &mut tx,
        request.user_id.as_str(),
        &device_id,
        request.initial_device_display_name.as_deref(),
        now_ms(),
    )
    .await
    .map_err(internal)?;
    // Logging in as an existing device replaces its session: the spec has the server invalidate
    // any token previously associated with that device.
    let revoked = store::delete_access_tokens_of_device(&mut tx, request.user_id.as_str(), &device_id)
        .await
        .map_err(internal)?;
    store::insert_access_token(&mut tx, &access_token, request.user_id.as_str(), &device_id)
        .await
        .map_err(internal)?;
    tx.commit().await.map_err(|e| internal(ganglion_storage::StorageError::from(e)))?;
    if revoked > 0 {
        svc.caches.forget_sessions();
        svc.bus.invalidate(ganglion_replication::Invalidation::Sessions);
    }
    Ok(SessionGrant {
        user_id: request.user_id,
        access_token: Some(access_token),
        device_id: Some(device_id.into()),
    })
}

/// Ends the session of `access_token`: the token and its device go (per the spec, logout
/// deletes the device).
pub(crate) async fn logout(svc: &MasterService, access_token: &str) -> MasterResult<()> {
    let mut writer = svc.writer.lock().await;
    let mut tx = svc.db.begin().await.map_err(internal)?;
    let mut row = None;
    if let Some((user_id, device_id)) =
        store::session_by_token(&mut tx, access_token).await.map_err(internal)?
    {
        row = delete_devices_in(&writer, &mut tx, &user_id, vec![device_id]).await?;
    }
    store::delete_access_token(&mut tx, access_token).await.map_err(internal)?;
    tx.commit().await.map_err(|e| internal(ganglion_storage::StorageError::from(e)))?;
    published(svc, &mut writer, row);
    svc.caches.forget_sessions();
    svc.bus.invalidate(ganglion_replication::Invalidation::Sessions);
    Ok(())
}

pub(crate) async fn logout_all(svc: &MasterService, user_id: &OwnedUserId) -> MasterResult<()> {
    let mut writer = svc.writer.lock().await;
    let mut tx = svc.db.begin().await.map_err(internal)?;
    let devices = store::devices_of_user(&mut tx, user_id.as_str()).await.map_err(internal)?;
    let devices = devices.into_iter().map(|device| device.device_id).collect();
    let row = delete_devices_in(&writer, &mut tx, user_id.as_str(), devices).await?;
    store::delete_access_tokens_of_user(&mut tx, user_id.as_str(), None).await.map_err(internal)?;
    tx.commit().await.map_err(|e| internal(ganglion_storage::StorageError::from(e)))?;
    published(svc, &mut writer, row);
    svc.caches.forget_sessions();
    svc.bus.invalidate(ganglion_replication::Invalidation::Sessions);
    Ok(())
}

pub(crate) async fn set_password(
    svc: &MasterService,
    user_id: &OwnedUserId,
    new_password: &str,
    logout_devices: bool,
    keep_device: Option<&OwnedDeviceId>,
) -> MasterResult<()> {
    if new_password.is_empty() {
        return Err(MasterError::new(ErrorClass::BadJson, "The new password must not be empty"));
    }
    let hash = hash_password(svc, new_password.to_owned()).await?;
    let mut writer = svc.writer.lock().await;
    let mut tx = svc.db.begin().await.map_err(internal)?;
    store::set_password_hash(&mut tx, user_id.as_str(), &hash).await.map_err(internal)?;
    let mut row = None;
    if logout_devices {
        let keep = keep_device.map(|device| device.as_str());
        let devices = store::devices_of_user(&mut tx, user_id.as_str()).await.map_err(internal)?;
        let devices = devices
            .into_iter()
            .map(|device| device.device_id)
            .filter(|device| Some(device.as_str()) != keep)
            .collect();
        row = delete_devices_in(&writer, &mut tx, user_id.as_str(), devices).await?;
        store::delete_access_tokens_of_user(&mut tx, user_id.as_str(), keep).await.map_err(internal)?;
    }
    tx.commit().await.map_err(|e| internal(ganglion_storage::StorageError::from(e)))?;
    published(svc, &mut writer, row);
    svc.caches.forget_sessions();
    svc.bus.invalidate(ganglion_replication::Invalidation::Sessions);
    Ok(())
}

pub(crate) async fn delete_devices(
    svc: &MasterService,
    user_id: &OwnedUserId,
    device_ids: &[OwnedDeviceId],
) -> MasterResult<()> {
    let mut writer = svc.writer.lock().await;
    let mut tx = svc.db.begin().await.map_err(internal)?;
    let devices = device_ids.iter().map(ToString::to_string).collect();
    let row = delete_devices_in(&writer, &mut tx, user_id.as_str(), devices).await?;
    tx.commit().await.map_err(|e| internal(ganglion_storage::StorageError::from(e)))?;
    published(svc, &mut writer, row);
    svc.caches.forget_sessions();
    svc.bus.invalidate(ganglion_replication::Invalidation::Sessions);
    Ok(())
}

pub(crate) async fn rename_device(
    svc: &MasterService,
    user_id: &OwnedUserId,
    device_id: &OwnedDeviceId,
    name: &str,
) -> MasterResult<()> {
    let mut conn = svc.db.conn().await.map_err(internal)?;
    if store::set_device_display_name(&mut conn, user_id.as_str(), device_id.as_str(), name)
        .await
        .map_err(internal)?
    {
        Ok(())
    } else {
        Err(MasterError::not_found("Unknown device"))
    }
}

pub(crate) async fn create_filter(
    svc: &MasterService,
    user_id: &OwnedUserId,
    filter: Value,
) -> MasterResult<String> {
    if !filter.is_object() {
        return Err(MasterError::bad_json("A filter must be a JSON object"));
    }
    let text = serde_json::to_string(&filter).map_err(|e| MasterError::bad_json(e.to_string()))?;
    let mut tx = svc.db.begin().await.map_err(internal)?;
    let filter_id = store::insert_filter(&mut tx, user_id.as_str(), &text).await.map_err(internal)?;
    tx.commit().await.map_err(|e| internal(ganglion_storage::StorageError::from(e)))?;
    Ok(filter_id.to_string())
}

/// Deletes devices with their keys and pending to-device messages in `tx` (under the writer
/// lock). When one had keys, records the user's device-list change: the row to publish once
/// `tx` is committed.
async fn delete_devices_in(
    writer: &Writer,
    tx: &mut ganglion_storage::Conn,
    user_id: &str,
    device_ids: Vec<String>,
) -> MasterResult<Option<StreamRow>> {
    let mut had_keys = false;
    for device_id in &device_ids {
        store::delete_device(tx, user_id, device_id).await.map_err(internal)?;
        had_keys |= keys::forget_device(tx, user_id, device_id).await?;
    }
    if !had_keys {
        return Ok(None);
    }
    keys::device_list_changed(writer, tx, user_id).await.map(Some)
}

fn published(svc: &MasterService, writer: &mut Writer, row: Option<StreamRow>) {
    if let Some(row) = row {
        keys::publish_device_list_row(svc, writer, row);
    }
}

/// Deactivates an account: with `erase` the profile is cleared first (so the leave events carry
/// none), then the user leaves every room they are in, invited to or knocking on, and last their
/// devices, sessions and pushers go and the account is locked. Leaving comes before locking: an
/// interrupted deactivation leaves an account that can still sign in and deactivate again,
/// never a locked one still in its rooms.
pub(crate) async fn deactivate(svc: &MasterService, user_id: &OwnedUserId, erase: bool) -> MasterResult<()> {
    let mut conn = svc.db.conn().await.map_err(internal)?;
    if erase {
        store::set_profile(&mut conn, user_id.as_str(), &store::Profile::default())
            .await
            .map_err(internal)?;
    }
    let memberships =
        ganglion_storage::rooms::memberships_of_user(&mut conn, user_id.as_str()).await.map_err(internal)?;
    let rooms: Vec<_> = memberships
        .into_iter()
        .filter(|m| matches!(m.membership.as_str(), "join" | "invite" | "knock"))
        .map(|m| m.room_nid)
        .collect();
    let rooms = ganglion_storage::rooms::rooms_by_nid(&mut conn, &rooms).await.map_err(internal)?;
    drop(conn);
    for room in rooms {
        let Ok(room_id) = ganglion_events::ruma::OwnedRoomId::try_from(room.room_id.as_str()) else {
            continue;
        };
        let left = crate::rooms::update_membership(
            svc,
            user_id,
            &room_id,
            user_id,
            ganglion_rpc::MembershipChange::Leave,
            None,
        )
        .await;
        match left {
            // A room where the user may not leave (an invite to a room of other servers that
            // this server is not in) keeps its row; the locked account cannot use it.
            Ok(_) => {}
            Err(error) if matches!(error.class, ErrorClass::Forbidden | ErrorClass::NotFound) => {}
            Err(error) => return Err(error),
        }
    }
    let mut writer = svc.writer.lock().await;
    let mut tx = svc.db.begin().await.map_err(internal)?;
    let devices = store::devices_of_user(&mut tx, user_id.as_str()).await.map_err(internal)?;
    let devices = devices.into_iter().map(|device| device.device_id).collect();
    let row = delete_devices_in(&writer, &mut tx, user_id.as_str(), devices).await?;
    store::delete_access_tokens_of_user(&mut tx, user_id.as_str(), None).await.map_err(internal)?;
    ganglion_storage::pushers::delete_pushers_of_user(&mut tx, user_id.as_str()).await.map_err(internal)?;
    store::deactivate_user(&mut tx, user_id.as_str(), erase).await.map_err(internal)?;
    tx.commit().await.map_err(|e| internal(ganglion_storage::StorageError::from(e)))?;
    published(svc, &mut writer, row);
    svc.caches.forget_sessions();
    svc.bus.invalidate(ganglion_replication::Invalidation::Sessions);
    tracing::info!(%user_id, erase, "deactivated an account");
    Ok(())
}

/// How long an OpenID token is valid.
const OPENID_TOKEN_LIFETIME_MS: u64 = 3_600_000;

/// A new OpenID token for `user_id`, valid for an hour.
pub(crate) async fn create_open_id_token(
    svc: &MasterService,
    user_id: &OwnedUserId,
) -> MasterResult<ganglion_rpc::OpenIdToken> {
    let token = random_string(40);
    let now = now_ms();
    let expires = now + OPENID_TOKEN_LIFETIME_MS as i64;
    let mut conn = svc.db.conn().await.map_err(internal)?;
    ganglion_storage::reports::insert_openid_token(&mut conn, &token, user_id.as_str(), expires, now)
        .await
        .map_err(internal)?;
    Ok(ganglion_rpc::OpenIdToken { access_token: token, expires_in_ms: OPENID_TOKEN_LIFETIME_MS })
}
