//! `/keys/*` and `/sendToDevice`.

use std::collections::{BTreeMap, BTreeSet};

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_config::RateLimitAction;
use ganglion_events::ruma::{OwnedDeviceId, OwnedUserId};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixResult, client_ip};
use ganglion_rpc::{ClaimKeys, KeyClaim, SendToDevice, UploadKeys, UploadSignatures, UploadSigningKeys};
use ganglion_storage::{
    Conn, accounts as account_store,
    keys::{self as key_store, CrossSigningKeyType},
};
use http::request::Parts;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    ClientState,
    accounts::{
        password::PASSWORD_FLOWS,
        uia::{self, AuthData, Uia},
    },
    rooms::access::{from_object, user_id},
};

#[derive(Deserialize)]
struct UploadBody {
    device_keys: Option<Value>,
    one_time_keys: Option<Value>,
    fallback_keys: Option<Value>,
}

/// `POST /keys/upload`.
pub(crate) async fn upload(
    State(state): State<ClientState>,
    Auth(session): Auth,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: UploadBody = from_object(body)?;
    let request = UploadKeys {
        user_id: session.user_id,
        device_id: session.device_id,
        device_keys: body.device_keys,
        one_time_keys: body.one_time_keys,
        fallback_keys: body.fallback_keys,
    };
    let counts = state.master.upload_keys(request).await?;
    Ok(Json(json!({ "one_time_key_counts": counts.0 })))
}

#[derive(Deserialize)]
struct QueryBody {
    device_keys: BTreeMap<String, Vec<String>>,
}

/// `POST /keys/query`: the devices' keys with the signatures made on them, and the users'
/// cross-signing keys. Users of other servers are reported in `failures` until federation.
pub(crate) async fn query(
    State(state): State<ClientState>,
    Auth(session): Auth,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    state.authenticator.rate_limiter().check_user(RateLimitAction::KeyRequests, session.user_id.as_str())?;
    let body: QueryBody = from_object(body)?;
    let mut users = Vec::new();
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut failures = Map::new();
    for (user, devices) in body.device_keys {
        let parsed = user_id(&user)?;
        if parsed.server_name() != state.config.server_name.as_str() {
            failures.insert(
                parsed.server_name().to_string(),
                json!({ "status": 503, "message": "Federation is not available on this server" }),
            );
            continue;
        }
        wanted.insert(user.clone(), devices.into_iter().collect());
        users.push(user);
    }
    let mut conn = state.db.conn().await?;
    let mut answer = key_query(&mut conn, session.user_id.as_str(), &users, &wanted).await?;
    answer.insert("failures".into(), Value::Object(failures));
    Ok(Json(Value::Object(answer)))
}

/// The `/keys/query` answer for local `users` (each with its wanted devices, all when empty),
/// as `requester` may see it: user-signing keys, and signatures made with them, only its own.
async fn key_query(
    conn: &mut Conn,
    requester: &str,
    users: &[String],
    wanted: &BTreeMap<String, BTreeSet<String>>,
) -> MatrixResult<Map<String, Value>> {
    let mut signatures: BTreeMap<(String, String), Vec<key_store::KeySignatureRow>> = BTreeMap::new();
    for signature in key_store::signatures_on_keys_of_users(conn, users).await? {
        // A signature with someone's user-signing key is that someone's business.
        if signature.signer_user_id != signature.target_user_id && signature.signer_user_id != requester {
            continue;
        }
        let key = (signature.target_user_id.clone(), signature.target_key_id.clone());
        signatures.entry(key).or_default().push(signature);
    }
    let with_signatures = |user: &str, key_id: &str, mut object: Value| {
        if let Some(rows) = signatures.get(&(user.to_owned(), key_id.to_owned())) {
            for row in rows {
                object["signatures"][row.signer_user_id.as_str()][row.signer_key_id.as_str()] =
                    json!(row.signature);
            }
        }
        object
    };

    let mut device_keys = Map::new();
    for user in users {
        device_keys.insert(user.clone(), json!({}));
    }
    let names: BTreeMap<(String, String), Option<String>> = account_store::device_names_of_users(conn, users)
        .await?
        .into_iter()
        .map(|(user, device, name)| ((user, device), name))
        .collect();
    for row in key_store::device_keys_of_users(conn, users).await? {
        let devices = &wanted[&row.user_id];
        if !devices.is_empty() && !devices.contains(&row.device_id) {
            continue;
        }
        let Ok(mut object) = serde_json::from_str::<Value>(&row.keys_json) else { continue };
        if let Some(Some(name)) = names.get(&(row.user_id.clone(), row.device_id.clone())) {
            object["unsigned"] = json!({ "device_display_name": name });
        }
        let object = with_signatures(&row.user_id, &row.device_id, object);
        device_keys[row.user_id.as_str()][row.device_id.as_str()] = object;
    }

    let mut master_keys = Map::new();
    let mut self_signing_keys = Map::new();
    let mut user_signing_keys = Map::new();
    for row in key_store::cross_signing_keys_of_users(conn, users).await? {
        let Ok(object) = serde_json::from_str::<Value>(&row.keys_json) else { continue };
        match row.key_type {
            CrossSigningKeyType::Master => {
                let public_key = public_key_of(&object).unwrap_or_default();
                let object = with_signatures(&row.user_id, &public_key, object);
                master_keys.insert(row.user_id, object);
            }
            CrossSigningKeyType::SelfSigning => {
                self_signing_keys.insert(row.user_id, object);
            }
            CrossSigningKeyType::UserSigning if row.user_id == requester => {
                user_signing_keys.insert(row.user_id, object);
            }
            CrossSigningKeyType::UserSigning => {}
        }
    }
    let mut answer = Map::new();
    answer.insert("device_keys".into(), Value::Object(device_keys));
    answer.insert("master_keys".into(), Value::Object(master_keys));
    answer.insert("self_signing_keys".into(), Value::Object(self_signing_keys));
    answer.insert("user_signing_keys".into(), Value::Object(user_signing_keys));
    Ok(answer)
}

/// The public key of a cross-signing key object: its one `ed25519:` key.
fn public_key_of(object: &Value) -> Option<String> {
    let keys = object.get("keys")?.as_object()?;
    keys.keys().find_map(|id| id.strip_prefix("ed25519:")).map(str::to_owned)
}

#[derive(Deserialize)]
struct ClaimBody {
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
}

/// `POST /keys/claim`: one key per device, a one-time key while any is left, else the fallback.
pub(crate) async fn claim(
    State(state): State<ClientState>,
    Auth(session): Auth,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    state.authenticator.rate_limiter().check_user(RateLimitAction::KeyRequests, session.user_id.as_str())?;
    let body: ClaimBody = from_object(body)?;
    let mut claims = Vec::new();
    let mut failures = Map::new();
    for (user, devices) in body.one_time_keys {
        let parsed: OwnedUserId = user_id(&user)?;
        if parsed.server_name() != state.config.server_name.as_str() {
            failures.insert(
                parsed.server_name().to_string(),
                json!({ "status": 503, "message": "Federation is not available on this server" }),
            );
            continue;
        }
        for (device, algorithm) in devices {
            claims.push(KeyClaim {
                user_id: parsed.clone(),
                device_id: OwnedDeviceId::from(device),
                algorithm,
            });
        }
    }
    let claimed =
        if claims.is_empty() { Vec::new() } else { state.master.claim_keys(ClaimKeys { claims }).await? };
    let mut keys = Map::new();
    for key in claimed {
        let user = keys.entry(key.user_id.to_string()).or_insert_with(|| json!({}));
        user[key.device_id.as_str()][key.key_id.as_str()] = key.key;
    }
    Ok(Json(json!({ "one_time_keys": keys, "failures": failures })))
}

#[derive(Deserialize)]
struct SigningKeysBody {
    master_key: Option<Value>,
    self_signing_key: Option<Value>,
    user_signing_key: Option<Value>,
    auth: Option<AuthData>,
}

/// `POST /keys/device_signing/upload`: user-interactive, except for a user's first upload
/// (the spec lets a client bootstrap cross-signing without asking for the password again).
pub(crate) async fn upload_signing_keys(
    State(state): State<ClientState>,
    parts: Parts,
    Auth(session): Auth,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: SigningKeysBody = from_object(body)?;
    let has_keys = {
        let mut conn = state.db.conn().await?;
        key_store::cross_signing_keys_of_users(&mut conn, &[session.user_id.to_string()])
            .await?
            .iter()
            .any(|row| row.key_type == CrossSigningKeyType::Master)
    };
    let passed = if has_keys {
        let binding = format!("POST /keys/device_signing/upload {}", session.user_id);
        let uia = Uia { flows: PASSWORD_FLOWS, binding, user_id: Some(&session.user_id) };
        Some(uia::authenticate(&state, uia, body.auth, client_ip(&parts)).await?)
    } else {
        None
    };
    let request = UploadSigningKeys {
        user_id: session.user_id,
        master_key: body.master_key,
        self_signing_key: body.self_signing_key,
        user_signing_key: body.user_signing_key,
    };
    state.master.upload_signing_keys(request).await?;
    if let Some(passed) = passed {
        state.uia.close(&passed.session);
    }
    Ok(Json(json!({})))
}

/// `POST /keys/signatures/upload`.
pub(crate) async fn upload_signatures(
    State(state): State<ClientState>,
    Auth(session): Auth,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let request = UploadSignatures { user_id: session.user_id, signatures: Value::Object(body) };
    let mut failures = Map::new();
    for failure in state.master.upload_signatures(request).await? {
        let (_, errcode) = MatrixError::status_and_errcode(&failure.error.class);
        let user = failures.entry(failure.user_id).or_insert_with(|| json!({}));
        user[failure.key_id.as_str()] = json!({ "errcode": errcode, "error": failure.error.message });
    }
    Ok(Json(json!({ "failures": failures })))
}

/// `PUT /sendToDevice/{eventType}/{txnId}`: idempotent per device and transaction id.
pub(crate) async fn send_to_device(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((event_type, txn_id)): Path<(String, String)>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    if txn_id.is_empty() || txn_id.len() > 255 {
        return Err(MatrixError::invalid_param("The transaction id must be 1 to 255 bytes"));
    }
    let request = SendToDevice {
        sender: session.user_id,
        sender_device: session.device_id,
        event_type,
        txn_id,
        body: Value::Object(body),
    };
    state.master.send_to_device(request).await?;
    Ok(Json(json!({})))
}
