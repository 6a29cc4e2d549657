//! `/keys/*` and `/sendToDevice`.

use std::collections::{BTreeMap, BTreeSet};

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_config::RateLimitAction;
use ganglion_events::ruma::{OwnedDeviceId, OwnedServerName, OwnedUserId};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixResult, client_ip};
use ganglion_rpc::{ClaimKeys, KeyClaim, SendToDevice, UploadKeys, UploadSignatures, UploadSigningKeys};
use ganglion_state::keys::key_query;
use ganglion_storage::keys::{self as key_store, CrossSigningKeyType};
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
    /// How long to wait for other servers, in milliseconds.
    #[serde(default)]
    timeout: Option<u64>,
}

/// How long `/keys/query` and `/keys/claim` wait for other servers unless the client says.
const DEFAULT_REMOTE_TIMEOUT_MS: u64 = 10_000;

/// `POST /keys/query`: the devices' keys with the signatures made on them, and the users'
/// cross-signing keys; those of other servers' users asked of their servers, all at once.
pub(crate) async fn query(
    State(state): State<ClientState>,
    Auth(session): Auth,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    state.authenticator.rate_limiter().check_user(RateLimitAction::KeyRequests, session.user_id.as_str())?;
    let body: QueryBody = from_object(body)?;
    let mut users = Vec::new();
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut remote: BTreeMap<OwnedServerName, Map<String, Value>> = BTreeMap::new();
    for (user, devices) in body.device_keys {
        let parsed = user_id(&user)?;
        if parsed.server_name() != state.config.server_name.as_str() {
            remote.entry(parsed.server_name().to_owned()).or_default().insert(user, json!(devices));
            continue;
        }
        wanted.insert(user.clone(), devices.into_iter().collect());
        users.push(user);
    }
    let timeout = body.timeout.unwrap_or(DEFAULT_REMOTE_TIMEOUT_MS);
    let (remote_answers, conn) = tokio::join!(
        ask_servers(remote, timeout, |server, users| {
            let federation = state.federation.client.clone();
            async move { federation.query_keys(&server, &json!({ "device_keys": users })).await }
        }),
        state.db.conn()
    );
    let mut conn = conn?;
    let mut answer = key_query(&mut conn, Some(session.user_id.as_str()), &users, &wanted).await?;
    let mut failures = Map::new();
    for (server, result) in remote_answers {
        match result {
            Ok(remote_answer) => {
                // A server speaks for its own users only.
                for field in ["device_keys", "master_keys", "self_signing_keys"] {
                    let Some(Value::Object(found)) = remote_answer.get(field) else { continue };
                    let Some(Value::Object(ours)) = answer.get_mut(field) else { continue };
                    for (user, keys) in found {
                        if user_of_server(user, &server) {
                            ours.insert(user.clone(), keys.clone());
                        }
                    }
                }
            }
            Err(failure) => {
                failures.insert(server.to_string(), failure);
            }
        }
    }
    answer.insert("failures".into(), Value::Object(failures));
    Ok(Json(Value::Object(answer)))
}

/// Asks each server its part of a request at once, each within `timeout_ms`; a server that
/// fails is reported as `/keys/*`'s `failures` want it.
async fn ask_servers<F, Fut>(
    per_server: BTreeMap<OwnedServerName, Map<String, Value>>,
    timeout_ms: u64,
    ask: F,
) -> Vec<(OwnedServerName, Result<Value, Value>)>
where
    F: Fn(OwnedServerName, Map<String, Value>) -> Fut,
    Fut: std::future::Future<Output = Result<Value, ganglion_federation::FederationError>>,
{
    let timeout = std::time::Duration::from_millis(timeout_ms);
    let asks = per_server.into_iter().map(|(server, users)| {
        let asked = ask(server.clone(), users);
        async move {
            let result = match tokio::time::timeout(timeout, asked).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(error)) => {
                    let status = match &error {
                        ganglion_federation::FederationError::Remote { status, .. } => *status,
                        _ => 503,
                    };
                    Err(json!({ "status": status, "message": error.to_string() }))
                }
                Err(_) => Err(json!({ "status": 504, "message": "The server did not answer in time" })),
            };
            (server, result)
        }
    });
    futures_util::future::join_all(asks).await
}

/// Whether `user` is a user id of `server`.
fn user_of_server(user: &str, server: &OwnedServerName) -> bool {
    ganglion_events::ruma::UserId::parse(user).is_ok_and(|user| user.server_name() == server)
}

#[derive(Deserialize)]
struct ClaimBody {
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    timeout: Option<u64>,
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
    let mut remote: BTreeMap<OwnedServerName, Map<String, Value>> = BTreeMap::new();
    for (user, devices) in body.one_time_keys {
        let parsed: OwnedUserId = user_id(&user)?;
        if parsed.server_name() != state.config.server_name.as_str() {
            remote.entry(parsed.server_name().to_owned()).or_default().insert(user, json!(devices));
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
    let timeout = body.timeout.unwrap_or(DEFAULT_REMOTE_TIMEOUT_MS);
    let local = async {
        if claims.is_empty() { Ok(Vec::new()) } else { state.master.claim_keys(ClaimKeys { claims }).await }
    };
    let (remote_answers, claimed) = tokio::join!(
        ask_servers(remote, timeout, |server, users| {
            let federation = state.federation.client.clone();
            async move { federation.claim_keys(&server, &json!({ "one_time_keys": users })).await }
        }),
        local
    );
    let mut keys = Map::new();
    for key in claimed? {
        let user = keys.entry(key.user_id.to_string()).or_insert_with(|| json!({}));
        user[key.device_id.as_str()][key.key_id.as_str()] = key.key;
    }
    for (server, result) in remote_answers {
        match result {
            Ok(answer) => {
                let Some(Value::Object(found)) = answer.get("one_time_keys") else { continue };
                for (user, devices) in found {
                    if user_of_server(user, &server) {
                        keys.insert(user.clone(), devices.clone());
                    }
                }
            }
            Err(failure) => {
                failures.insert(server.to_string(), failure);
            }
        }
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
