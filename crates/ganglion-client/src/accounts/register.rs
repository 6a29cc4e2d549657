//! Registration (user-interactive, with the dummy stage) and username availability.

use axum::{Json, extract::State};
use ganglion_config::RateLimitAction;
use ganglion_events::ruma::{OwnedUserId, UserId};
use ganglion_http::{MatrixError, MatrixJson, MatrixQuery, MatrixResult, client_ip};
use ganglion_rpc::RegisterRequest;
use ganglion_storage::accounts as account_store;
use ganglion_types::ErrorClass;
use http::request::Parts;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    from_object,
    uia::{self, AuthData, DUMMY, Flow, Uia},
};
use crate::ClientState;

const REGISTER_FLOWS: &[Flow] = &[&[DUMMY]];

/// The user id a requested username maps to. Usernames are lowercased, then must follow the
/// user id grammar (`a-z`, `0-9`, `._=-/+`) and keep the whole id within 255 bytes.
pub(crate) fn new_user_id(username: &str, server_name: &str) -> MatrixResult<OwnedUserId> {
    let invalid =
        |reason: &str| MatrixError::new(ErrorClass::InvalidUsername, format!("Invalid username: {reason}"));
    let localpart = username.to_lowercase();
    if localpart.is_empty() {
        return Err(invalid("it is empty"));
    }
    let user_id =
        UserId::parse(format!("@{localpart}:{server_name}")).map_err(|error| invalid(&error.to_string()))?;
    if user_id.localpart() != localpart || user_id.validate_strict().is_err() {
        return Err(invalid("only a-z, 0-9 and the characters ._=-/+ are allowed"));
    }
    Ok(user_id)
}

/// The user id for `username`, refused when invalid or taken.
async fn available_user_id(state: &ClientState, username: &str) -> MatrixResult<OwnedUserId> {
    let user_id = new_user_id(username, &state.config.server_name)?;
    let mut conn = state.db.conn().await?;
    if account_store::user_exists(&mut conn, user_id.as_str()).await? {
        return Err(MatrixError::new(ErrorClass::UserInUse, "User ID already taken"));
    }
    Ok(user_id)
}

#[derive(Deserialize)]
pub(crate) struct RegisterQuery {
    kind: Option<String>,
}

#[derive(Deserialize)]
struct RegisterBody {
    auth: Option<AuthData>,
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
}

/// `POST /register`. The username is checked before the auth stage, as the spec asks, and
/// again by the master when it inserts the user.
pub(crate) async fn register(
    State(state): State<ClientState>,
    parts: Parts,
    MatrixQuery(query): MatrixQuery<RegisterQuery>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    match query.kind.as_deref().unwrap_or("user") {
        "user" => {}
        "guest" => {
            return Err(MatrixError::new(
                ErrorClass::GuestAccessForbidden,
                "Guest accounts are not supported",
            ));
        }
        other => return Err(MatrixError::invalid_param(format!("Unknown account kind {other:?}"))),
    }
    if !state.config.registration.enabled {
        return Err(MatrixError::forbidden("Registration is disabled"));
    }
    let body: RegisterBody = from_object(body)?;
    let user_id = match body.username.as_deref() {
        Some(username) => Some(available_user_id(&state, username).await?),
        None => None,
    };
    let ip = client_ip(&parts);
    let uia = Uia { flows: REGISTER_FLOWS, binding: "POST /register".to_owned(), user_id: None };
    let passed = uia::authenticate(&state, uia, body.auth, ip).await?;
    state.authenticator.rate_limiter().check_address(RateLimitAction::Registration, ip)?;
    let request = RegisterRequest {
        username: user_id.map(|user_id| user_id.localpart().to_owned()),
        password: body.password,
        device_id: body.device_id.filter(|device_id| !device_id.is_empty()),
        initial_device_display_name: body.initial_device_display_name,
        inhibit_login: body.inhibit_login,
    };
    let grant = state.master.register(request).await?;
    state.uia.close(&passed.session);
    let mut response = json!({ "user_id": grant.user_id });
    if let (Some(access_token), Some(device_id)) = (grant.access_token, grant.device_id) {
        response["access_token"] = json!(access_token);
        response["device_id"] = json!(device_id);
    }
    Ok(Json(response))
}

#[derive(Deserialize)]
pub(crate) struct AvailableQuery {
    username: Option<String>,
}

/// `GET /register/available?username=`.
pub(crate) async fn available(
    State(state): State<ClientState>,
    MatrixQuery(query): MatrixQuery<AvailableQuery>,
) -> MatrixResult<Json<Value>> {
    let username = query.username.ok_or_else(|| MatrixError::missing_param("Missing `username`"))?;
    available_user_id(&state, &username).await?;
    Ok(Json(json!({ "available": true })))
}
