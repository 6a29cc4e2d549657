//! Sessions: password login, logout, and whoami.

use axum::{Json, extract::State};
use ganglion_config::RateLimitAction;
use ganglion_events::ruma::{OwnedUserId, ServerName, UserId};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixResult, client_ip};
use ganglion_types::{ErrorClass, HasErrorClass};
use http::request::Parts;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{from_object, uia::PASSWORD};
use crate::ClientState;
use ganglion_rpc::{LoginRequest, Logout, LogoutAll};

/// A user identifier object (`identifier` in `/login` and in `m.login.password` stages).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct UserIdentifier {
    #[serde(rename = "type")]
    pub kind: String,
    /// The user id or localpart, for `m.id.user`.
    pub user: Option<String>,
}

/// The local user a login names, from `identifier` or the deprecated `user` (or, with
/// `legacy_third_party`, the deprecated `medium`/`address`). We hold no third-party
/// identifiers, so those are refused as unknown (403); so are users of other servers and
/// names that cannot be user ids, like a wrong password, so a login reveals nothing.
pub(crate) fn identified_user(
    identifier: Option<&UserIdentifier>,
    legacy_user: Option<&str>,
    legacy_third_party: bool,
    server_name: &str,
) -> MatrixResult<OwnedUserId> {
    let user = match (identifier, legacy_user) {
        (Some(identifier), _) => match identifier.kind.as_str() {
            "m.id.user" => identifier
                .user
                .as_deref()
                .ok_or_else(|| MatrixError::missing_param("The m.id.user identifier needs a `user`"))?,
            "m.id.thirdparty" | "m.id.phone" => {
                return Err(MatrixError::forbidden("No account is bound to this third-party identifier"));
            }
            other => {
                return Err(MatrixError::new(
                    ErrorClass::Unknown,
                    format!("Unknown identifier type {other:?}"),
                ));
            }
        },
        (None, Some(user)) => user,
        (None, None) if legacy_third_party => {
            return Err(MatrixError::forbidden("No account is bound to this third-party identifier"));
        }
        (None, None) => return Err(MatrixError::missing_param("Missing `identifier`")),
    };
    local_user_id(user, server_name).ok_or_else(|| MatrixError::forbidden("Invalid username or password"))
}

/// A user id or localpart as a local user id. Localparts are lowercase on this server, so a
/// user may type theirs in any case.
fn local_user_id(user: &str, server_name: &str) -> Option<OwnedUserId> {
    let server_name = <&ServerName>::try_from(server_name).ok()?;
    let user_id = UserId::parse_with_server_name(user, server_name).ok()?;
    if user_id.server_name() != server_name {
        return None;
    }
    UserId::parse(format!("@{}:{server_name}", user_id.localpart().to_lowercase())).ok()
}

/// `GET /login`: the supported login types.
pub(crate) async fn login_flows() -> Json<Value> {
    Json(json!({ "flows": [{ "type": PASSWORD }] }))
}

#[derive(Deserialize)]
struct LoginBody {
    #[serde(rename = "type")]
    kind: String,
    identifier: Option<UserIdentifier>,
    user: Option<String>,
    medium: Option<String>,
    address: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
}

/// `POST /login` with `m.login.password`. Rate-limited per client address and per account;
/// failed attempts lock the account and the address for a while.
pub(crate) async fn login(
    State(state): State<ClientState>,
    parts: Parts,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let limiter = state.authenticator.rate_limiter();
    let ip = client_ip(&parts);
    limiter.check_address(RateLimitAction::LoginAddress, ip)?;
    let body: LoginBody = from_object(body)?;
    if body.kind != PASSWORD {
        return Err(MatrixError::new(ErrorClass::Unknown, format!("Unsupported login type {:?}", body.kind)));
    }
    let legacy_third_party = body.medium.is_some() || body.address.is_some();
    let user_id = identified_user(
        body.identifier.as_ref(),
        body.user.as_deref(),
        legacy_third_party,
        &state.config.server_name,
    )?;
    let password = body.password.ok_or_else(|| MatrixError::missing_param("Missing `password`"))?;
    limiter.check_failed_logins(user_id.as_str(), ip)?;
    limiter.check_user(RateLimitAction::LoginAccount, user_id.as_str())?;
    let request = LoginRequest {
        user_id: user_id.clone(),
        password,
        device_id: body.device_id.filter(|device_id| !device_id.is_empty()),
        initial_device_display_name: body.initial_device_display_name,
    };
    let grant = match state.master.login(request).await {
        Ok(grant) => grant,
        Err(error) => {
            if error.class() == ErrorClass::Forbidden {
                limiter.record_failed_login(user_id.as_str(), ip);
            }
            return Err(error.into());
        }
    };
    let (Some(access_token), Some(device_id)) = (grant.access_token, grant.device_id) else {
        return Err(MatrixError::internal("The master opened no session for a login"));
    };
    Ok(Json(json!({ "user_id": grant.user_id, "access_token": access_token, "device_id": device_id })))
}

/// `POST /logout`: ends this session and deletes its device.
pub(crate) async fn logout(
    State(state): State<ClientState>,
    Auth(session): Auth,
) -> MatrixResult<Json<Value>> {
    state.master.logout(Logout { access_token: session.access_token }).await?;
    Ok(Json(json!({})))
}

/// `POST /logout/all`: ends every session of the user and deletes every device.
pub(crate) async fn logout_all(
    State(state): State<ClientState>,
    Auth(session): Auth,
) -> MatrixResult<Json<Value>> {
    state.master.logout_all(LogoutAll { user_id: session.user_id }).await?;
    Ok(Json(json!({})))
}

/// `GET /account/whoami`.
pub(crate) async fn whoami(Auth(session): Auth) -> Json<Value> {
    Json(json!({ "user_id": session.user_id, "device_id": session.device_id, "is_guest": false }))
}
