//! Other servers asking about our users' devices and keys: `/user/keys/query`,
//! `/user/keys/claim` and `/user/devices/{userId}`. Users of other servers are not ours to
//! answer for and are left out.

use std::collections::{BTreeMap, BTreeSet};

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_events::ruma::{OwnedDeviceId, OwnedUserId, UserId};
use ganglion_http::{MatrixError, MatrixResult};
use ganglion_rpc::{ClaimKeys, KeyClaim};
use ganglion_state::keys::key_query;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{FederationState, Signed};

/// Users one request may ask about.
const MAX_USERS_PER_REQUEST: usize = 1000;

fn parse_body<T: serde::de::DeserializeOwned>(signed: &Signed) -> MatrixResult<T> {
    serde_json::from_slice(&signed.body)
        .map_err(|error| MatrixError::bad_json(format!("Invalid JSON: {error}")))
}

/// `user` if it is a user id of this server.
fn local_user(state: &FederationState, user: &str) -> Option<OwnedUserId> {
    UserId::parse(user).ok().filter(|user| user.server_name().as_str() == state.config.server_name)
}

#[derive(Deserialize)]
struct QueryBody {
    device_keys: BTreeMap<String, Vec<String>>,
}

/// `POST /_matrix/federation/v1/user/keys/query`.
pub(crate) async fn query_keys(
    State(state): State<FederationState>,
    signed: Signed,
) -> MatrixResult<Json<Value>> {
    let body: QueryBody = parse_body(&signed)?;
    if body.device_keys.len() > MAX_USERS_PER_REQUEST {
        return Err(MatrixError::invalid_param(format!("At most {MAX_USERS_PER_REQUEST} users per query")));
    }
    let mut users = Vec::new();
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (user, devices) in body.device_keys {
        if let Some(user) = local_user(&state, &user) {
            wanted.insert(user.to_string(), devices.into_iter().collect());
            users.push(user.to_string());
        }
    }
    let mut conn = state.db.conn().await?;
    let mut answer = key_query(&mut conn, None, &users, &wanted).await?;
    // Another server never sees a user-signing key.
    answer.remove("user_signing_keys");
    Ok(Json(Value::Object(answer)))
}

#[derive(Deserialize)]
struct ClaimBody {
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
}

/// `POST /_matrix/federation/v1/user/keys/claim`: one key per device, through the master (a
/// one-time key is handed out once, whoever asks).
pub(crate) async fn claim_keys(
    State(state): State<FederationState>,
    signed: Signed,
) -> MatrixResult<Json<Value>> {
    let body: ClaimBody = parse_body(&signed)?;
    if body.one_time_keys.len() > MAX_USERS_PER_REQUEST {
        return Err(MatrixError::invalid_param(format!("At most {MAX_USERS_PER_REQUEST} users per claim")));
    }
    let mut claims = Vec::new();
    for (user, devices) in body.one_time_keys {
        let Some(user) = local_user(&state, &user) else { continue };
        for (device, algorithm) in devices {
            claims.push(KeyClaim {
                user_id: user.clone(),
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
    Ok(Json(json!({ "one_time_keys": keys })))
}

/// `GET /_matrix/federation/v1/user/devices/{userId}`: a user's devices with their keys, and
/// the user's cross-signing keys.
pub(crate) async fn devices(
    State(state): State<FederationState>,
    Path(user): Path<String>,
    _signed: Signed,
) -> MatrixResult<Json<Value>> {
    let user = local_user(&state, &user)
        .ok_or_else(|| MatrixError::invalid_param("The user is not on this server"))?;
    let mut conn = state.db.conn().await?;
    let devices = ganglion_storage::accounts::devices_of_user(&mut conn, user.as_str()).await?;
    let users = vec![user.to_string()];
    let wanted = BTreeMap::from([(user.to_string(), BTreeSet::new())]);
    let keys = key_query(&mut conn, None, &users, &wanted).await?;
    let stream_id = ganglion_storage::keys::max_device_list_stream_pos(&mut conn).await?;
    let device_keys = &keys["device_keys"][user.as_str()];
    let devices: Vec<Value> = devices
        .into_iter()
        .filter_map(|device| {
            let keys = device_keys.get(&device.device_id)?.clone();
            let mut entry = json!({ "device_id": device.device_id, "keys": keys });
            if let Some(name) = device.display_name {
                entry["device_display_name"] = json!(name);
            }
            Some(entry)
        })
        .collect();
    let mut answer = json!({ "user_id": user, "stream_id": stream_id, "devices": devices });
    for (field, name) in [("master_keys", "master_key"), ("self_signing_keys", "self_signing_key")] {
        if let Some(key) = keys[field].get(user.as_str()) {
            answer[name] = key.clone();
        }
    }
    Ok(Json(answer))
}
