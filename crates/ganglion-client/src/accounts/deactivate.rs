//! Account deactivation, behind an `m.login.password` stage, and OpenID tokens, with which a
//! user proves who they are to another server (an integration manager, a widget).

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixResult, MaybeAuth, client_ip};
use ganglion_rpc::{CreateOpenIdToken, DeactivateAccount};
use http::request::Parts;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    from_object,
    password::PASSWORD_FLOWS,
    uia::{self, AuthData, Uia},
};
use crate::ClientState;

#[derive(Deserialize)]
struct DeactivateBody {
    auth: Option<AuthData>,
    #[serde(default)]
    erase: bool,
}

/// `POST /account/deactivate`. With an access token the password stage must prove that user;
/// without one, the stage names the user. The user leaves every room, every session ends, and
/// the account can no longer sign in; with `erase`, the profile is cleared. No identity server
/// is bound to, so none is unbound from.
pub(crate) async fn deactivate(
    State(state): State<ClientState>,
    parts: Parts,
    MaybeAuth(session): MaybeAuth,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: DeactivateBody = from_object(body)?;
    let session_user = session.as_ref().map(|session| &session.user_id);
    let binding = match session_user {
        Some(user_id) => format!("POST /account/deactivate {user_id}"),
        None => "POST /account/deactivate".to_owned(),
    };
    let uia = Uia { flows: PASSWORD_FLOWS, binding, user_id: session_user };
    let passed = uia::authenticate(&state, uia, body.auth, client_ip(&parts)).await?;
    let user_id = match (session_user, &passed.user_id) {
        (Some(user_id), _) | (None, Some(user_id)) => user_id.clone(),
        (None, None) => return Err(MatrixError::forbidden("The password stage named no user")),
    };
    state.master.deactivate_account(DeactivateAccount { user_id, erase: body.erase }).await?;
    state.uia.close(&passed.session);
    Ok(Json(json!({ "id_server_unbind_result": "no-support" })))
}

/// `POST /user/{userId}/openid/request_token`: a token for the user's own id, which another
/// server exchanges at this server's `/openid/userinfo`.
pub(crate) async fn request_openid_token(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(user_id): Path<String>,
    MatrixJson(_body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    if user_id != session.user_id.as_str() {
        return Err(MatrixError::forbidden("You may only request a token for yourself"));
    }
    let token =
        state.master.create_open_id_token(CreateOpenIdToken { user_id: session.user_id.clone() }).await?;
    Ok(Json(json!({
        "access_token": token.access_token,
        "token_type": "Bearer",
        "matrix_server_name": state.config.server_name,
        "expires_in": token.expires_in_ms / 1000,
    })))
}
