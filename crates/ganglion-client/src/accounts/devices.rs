//! The user's devices: listing, renaming and deleting (deletion needs the password).

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_events::ruma::OwnedDeviceId;
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixResult, client_ip};
use ganglion_storage::accounts::{self as account_store, Device};
use http::request::Parts;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    from_object,
    password::PASSWORD_FLOWS,
    uia::{self, AuthData, Uia},
};
use crate::ClientState;
use ganglion_rpc::{DeleteDevices, RenameDevice};

/// A device as the client API shows it: absent fields are left out.
fn device_json(device: Device) -> Value {
    let mut object = Map::new();
    object.insert("device_id".into(), json!(device.device_id));
    if let Some(name) = device.display_name {
        object.insert("display_name".into(), json!(name));
    }
    if let Some(ip) = device.last_seen_ip {
        object.insert("last_seen_ip".into(), json!(ip));
    }
    if let Some(ts) = device.last_seen_ts {
        object.insert("last_seen_ts".into(), json!(ts));
    }
    Value::Object(object)
}

/// `GET /devices`.
pub(crate) async fn devices(
    State(state): State<ClientState>,
    Auth(session): Auth,
) -> MatrixResult<Json<Value>> {
    let mut conn = state.db.conn().await?;
    let devices = account_store::devices_of_user(&mut conn, session.user_id.as_str()).await?;
    Ok(Json(json!({ "devices": devices.into_iter().map(device_json).collect::<Vec<_>>() })))
}

/// `GET /devices/{deviceId}`: only the user's own devices.
pub(crate) async fn device(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(device_id): Path<String>,
) -> MatrixResult<Json<Value>> {
    let mut conn = state.db.conn().await?;
    let device = account_store::device(&mut conn, session.user_id.as_str(), &device_id).await?;
    let device = device.ok_or_else(|| MatrixError::not_found("Unknown device"))?;
    Ok(Json(device_json(device)))
}

#[derive(Deserialize)]
struct RenameBody {
    display_name: Option<String>,
}

/// `PUT /devices/{deviceId}`: renames one of the user's devices (creating devices is for
/// application services, which we do not have).
pub(crate) async fn rename_device(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(device_id): Path<String>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: RenameBody = from_object(body)?;
    match body.display_name {
        Some(name) => {
            let device_id = OwnedDeviceId::from(device_id);
            state.master.rename_device(RenameDevice { user_id: session.user_id, device_id, name }).await?;
        }
        None => {
            let mut conn = state.db.conn().await?;
            if account_store::device(&mut conn, session.user_id.as_str(), &device_id).await?.is_none() {
                return Err(MatrixError::not_found("Unknown device"));
            }
        }
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct DeleteDeviceBody {
    auth: Option<AuthData>,
}

/// `DELETE /devices/{deviceId}`: user-interactive; deleting an unknown device succeeds.
pub(crate) async fn delete_device(
    State(state): State<ClientState>,
    parts: Parts,
    Auth(session): Auth,
    Path(device_id): Path<String>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: DeleteDeviceBody = from_object(body)?;
    let binding = format!("DELETE /devices/{device_id} {}", session.user_id);
    let uia = Uia { flows: PASSWORD_FLOWS, binding, user_id: Some(&session.user_id) };
    let passed = uia::authenticate(&state, uia, body.auth, client_ip(&parts)).await?;
    let device_ids = vec![OwnedDeviceId::from(device_id)];
    state.master.delete_devices(DeleteDevices { user_id: session.user_id, device_ids }).await?;
    state.uia.close(&passed.session);
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct DeleteDevicesBody {
    devices: Vec<String>,
    auth: Option<AuthData>,
}

/// `POST /delete_devices`: user-interactive; unknown devices are skipped.
pub(crate) async fn delete_devices(
    State(state): State<ClientState>,
    parts: Parts,
    Auth(session): Auth,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: DeleteDevicesBody = from_object(body)?;
    let binding = format!("POST /delete_devices {}", session.user_id);
    let uia = Uia { flows: PASSWORD_FLOWS, binding, user_id: Some(&session.user_id) };
    let passed = uia::authenticate(&state, uia, body.auth, client_ip(&parts)).await?;
    let device_ids: Vec<OwnedDeviceId> = body.devices.into_iter().map(OwnedDeviceId::from).collect();
    state.master.delete_devices(DeleteDevices { user_id: session.user_id, device_ids }).await?;
    state.uia.close(&passed.session);
    Ok(Json(json!({})))
}
