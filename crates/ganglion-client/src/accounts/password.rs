//! Password change, behind an `m.login.password` stage.

use axum::{Json, extract::State};
use ganglion_http::{MatrixError, MatrixJson, MatrixResult, MaybeAuth, client_ip};
use http::request::Parts;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    from_object,
    uia::{self, AuthData, Flow, PASSWORD, Uia},
};
use crate::ClientState;
use ganglion_rpc::SetPassword;

pub(crate) const PASSWORD_FLOWS: &[Flow] = &[&[PASSWORD]];

#[derive(Deserialize)]
struct PasswordBody {
    new_password: String,
    logout_devices: Option<bool>,
    auth: Option<AuthData>,
}

/// `POST /account/password`. With an access token the password stage must prove that user;
/// without one, the stage names the user. Other sessions end unless `logout_devices` is false;
/// the requesting one stays.
pub(crate) async fn change_password(
    State(state): State<ClientState>,
    parts: Parts,
    MaybeAuth(session): MaybeAuth,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: PasswordBody = from_object(body)?;
    if body.new_password.is_empty() {
        return Err(MatrixError::bad_json("The new password must not be empty"));
    }
    let session_user = session.as_ref().map(|session| &session.user_id);
    let binding = match session_user {
        Some(user_id) => format!("POST /account/password {user_id}"),
        None => "POST /account/password".to_owned(),
    };
    let uia = Uia { flows: PASSWORD_FLOWS, binding, user_id: session_user };
    let passed = uia::authenticate(&state, uia, body.auth, client_ip(&parts)).await?;
    let user_id = match (session_user, &passed.user_id) {
        (Some(user_id), _) | (None, Some(user_id)) => user_id.clone(),
        (None, None) => return Err(MatrixError::forbidden("The password stage named no user")),
    };
    let request = SetPassword {
        user_id,
        new_password: body.new_password,
        logout_devices: body.logout_devices.unwrap_or(true),
        keep_device: session.map(|session| session.device_id),
    };
    state.master.set_password(request).await?;
    state.uia.close(&passed.session);
    Ok(Json(json!({})))
}
