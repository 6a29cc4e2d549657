//! Profiles: display name and avatar. Anyone may read a local user's profile; users set only
//! their own, through the master, which also updates their member event in joined rooms.

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_events::ruma::{MxcUri, OwnedUserId};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixResult, Session};
use ganglion_storage::accounts::{self as account_store, Profile};
use ganglion_types::ErrorClass;
use serde_json::{Map, Value, json};

use super::user_id_param;
use crate::ClientState;
use ganglion_rpc::{ProfileField, SetProfile};

/// Longest display name, in characters (as Synapse). Every member event of the user carries the
/// profile, so it must stay far from the 64 KiB event limit; a longer value is refused with
/// 413 `M_TOO_LARGE` before any room is touched.
const MAX_DISPLAYNAME_CHARS: usize = 256;
/// Longest avatar URL, in bytes (an mxc URI is far shorter); refused the same way.
const MAX_AVATAR_URL_BYTES: usize = 1000;

/// The profile of a user, or 404: a local user's from the database, a remote one's from their
/// server.
async fn stored_profile(state: &ClientState, user_id: &OwnedUserId) -> MatrixResult<Profile> {
    if user_id.server_name().as_str() != state.config.server_name {
        let answer = state.federation.client.profile(user_id, None).await?;
        let field = |name: &str| answer.get(name).and_then(Value::as_str).map(str::to_owned);
        return Ok(Profile { displayname: field("displayname"), avatar_url: field("avatar_url") });
    }
    let mut conn = state.db.conn().await?;
    let profile = account_store::profile_of_user(&mut conn, user_id.as_str()).await?;
    profile.ok_or_else(|| MatrixError::not_found("Profile not found"))
}

/// `GET /profile/{userId}`: the fields that are set.
pub(crate) async fn profile(
    State(state): State<ClientState>,
    Path(user_id): Path<String>,
) -> MatrixResult<Json<Value>> {
    let profile = stored_profile(&state, &user_id_param(&user_id)?).await?;
    let mut object = Map::new();
    if let Some(displayname) = profile.displayname {
        object.insert("displayname".into(), json!(displayname));
    }
    if let Some(avatar_url) = profile.avatar_url {
        object.insert("avatar_url".into(), json!(avatar_url));
    }
    Ok(Json(Value::Object(object)))
}

/// One profile field, or 404 when the user or the field does not exist.
async fn profile_field(state: &ClientState, user_id: &str, field: ProfileField) -> MatrixResult<Json<Value>> {
    let profile = stored_profile(state, &user_id_param(user_id)?).await?;
    let (key, value) = match field {
        ProfileField::Displayname => ("displayname", profile.displayname),
        ProfileField::AvatarUrl => ("avatar_url", profile.avatar_url),
    };
    let value = value.ok_or_else(|| MatrixError::not_found(format!("The user has no {key}")))?;
    Ok(Json(json!({ key: value })))
}

/// `GET /profile/{userId}/displayname`.
pub(crate) async fn displayname(
    State(state): State<ClientState>,
    Path(user_id): Path<String>,
) -> MatrixResult<Json<Value>> {
    profile_field(&state, &user_id, ProfileField::Displayname).await
}

/// `GET /profile/{userId}/avatar_url`.
pub(crate) async fn avatar_url(
    State(state): State<ClientState>,
    Path(user_id): Path<String>,
) -> MatrixResult<Json<Value>> {
    profile_field(&state, &user_id, ProfileField::AvatarUrl).await
}

/// The new value of `field` from a PUT body (`None` clears it): a string, or `null`.
pub(crate) fn new_field_value(
    field: ProfileField,
    body: &Map<String, Value>,
) -> MatrixResult<Option<String>> {
    let key = match field {
        ProfileField::Displayname => "displayname",
        ProfileField::AvatarUrl => "avatar_url",
    };
    let value = match body.get(key) {
        None => return Err(MatrixError::missing_param(format!("Missing `{key}`"))),
        Some(Value::Null) => return Ok(None),
        Some(Value::String(value)) if value.is_empty() => return Ok(None),
        Some(Value::String(value)) => value.clone(),
        Some(_) => return Err(MatrixError::bad_json(format!("`{key}` must be a string"))),
    };
    match field {
        ProfileField::Displayname if value.chars().count() > MAX_DISPLAYNAME_CHARS => Err(MatrixError::new(
            ErrorClass::TooLarge,
            format!("The display name is longer than the maximum of {MAX_DISPLAYNAME_CHARS} characters"),
        )),
        ProfileField::AvatarUrl if value.len() > MAX_AVATAR_URL_BYTES => Err(MatrixError::new(
            ErrorClass::TooLarge,
            format!("The avatar URL is longer than the maximum of {MAX_AVATAR_URL_BYTES} bytes"),
        )),
        ProfileField::AvatarUrl if <&MxcUri>::from(value.as_str()).validate().is_err() => {
            Err(MatrixError::invalid_param("The avatar URL must be an mxc:// URI"))
        }
        _ => Ok(Some(value)),
    }
}

/// Sets one field of the requester's own profile.
async fn set_profile_field(
    state: &ClientState,
    session: &Session,
    user_id: &str,
    field: ProfileField,
    body: &Map<String, Value>,
) -> MatrixResult<Json<Value>> {
    if user_id_param(user_id)? != session.user_id {
        return Err(MatrixError::forbidden("Cannot change the profile of other users"));
    }
    let value = new_field_value(field, body)?;
    state.master.set_profile(SetProfile { user_id: session.user_id.clone(), field, value }).await?;
    Ok(Json(json!({})))
}

/// `PUT /profile/{userId}/displayname`.
pub(crate) async fn set_displayname(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(user_id): Path<String>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    set_profile_field(&state, &session, &user_id, ProfileField::Displayname, &body).await
}

/// `PUT /profile/{userId}/avatar_url`.
pub(crate) async fn set_avatar_url(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(user_id): Path<String>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    set_profile_field(&state, &session, &user_id, ProfileField::AvatarUrl, &body).await
}
