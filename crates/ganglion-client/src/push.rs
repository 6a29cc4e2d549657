//! The push module's client API: `/notifications` (the events the user's push rules notified
//! them of, as the master decided when each event was written) and the user's pushers
//! (`/pushers`, `/pushers/set`), which the pusher role delivers those notifications to.

use axum::{Json, extract::State};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixQuery, MatrixResult, Route};
use ganglion_rpc::SetPusher;
use ganglion_storage::{push_actions, pushers};
use ganglion_types::EndpointClass::{ClientRead, ClientWrite};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::ClientState;

pub(crate) fn routes() -> Vec<Route<ClientState>> {
    vec![
        Route::get("/_matrix/client/v3/notifications", ClientRead, notifications),
        Route::get("/_matrix/client/v3/pushers", ClientRead, get_pushers),
        Route::post("/_matrix/client/v3/pushers/set", ClientWrite, set_pusher),
    ]
}

/// A page holds at most this many notifications, whatever `limit` asks.
const MAX_PAGE: i64 = 100;
const DEFAULT_PAGE: i64 = 20;

#[derive(Debug, Deserialize)]
pub(crate) struct NotificationsQuery {
    from: Option<String>,
    limit: Option<String>,
    only: Option<String>,
}

/// `GET /notifications`: newest first, paged by `next_token`; `only=highlight` keeps the
/// highlights.
pub(crate) async fn notifications(
    State(state): State<ClientState>,
    Auth(session): Auth,
    MatrixQuery(query): MatrixQuery<NotificationsQuery>,
) -> MatrixResult<Json<Value>> {
    let before = match query.from.as_deref() {
        None | Some("") => None,
        Some(from) => Some(
            from.parse::<i64>()
                .map_err(|_| MatrixError::invalid_param("`from` is not a token this server gave"))?,
        ),
    };
    let limit = match query.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(limit) => limit
            .parse::<i64>()
            .map_err(|_| MatrixError::invalid_param("`limit` must be a number"))?
            .clamp(1, MAX_PAGE),
    };
    let only_highlight = match query.only.as_deref() {
        None => false,
        Some("highlight") => true,
        Some(other) => return Err(MatrixError::invalid_param(format!("Unknown `only` filter {other:?}"))),
    };
    let user_id = session.user_id.as_str();
    let mut conn = state.db.conn().await?;
    // Only what this worker can show (its events position may be behind the master's).
    let head = state.positions.current().events.0;
    let before = Some(before.map_or(head + 1, |before| before.min(head + 1)));
    let (rows, next_token) =
        push_actions::notifications_of_user(&mut conn, user_id, before, limit as usize, only_highlight)
            .await?;
    let nids: Vec<_> = rows.iter().map(|row| row.event_nid).collect();
    let events = state.caches.events(&mut conn, &nids).await?;
    let viewer = (user_id, session.device_id.as_str());
    let formatted = state.caches.client_events(&mut conn, &events, Some(viewer)).await?;
    let by_nid: std::collections::HashMap<_, _> =
        events.iter().map(|event| event.row.event_nid).zip(formatted).collect();
    let notifications: Vec<Value> = rows
        .into_iter()
        .filter_map(|row| {
            let event = by_nid.get(&row.event_nid)?.clone();
            Some(json!({
                "actions": row.actions,
                "event": event,
                "read": row.read,
                "room_id": row.room_id,
                "ts": row.ts,
            }))
        })
        .collect();
    let mut body = json!({ "notifications": notifications });
    if let Some(token) = next_token {
        body["next_token"] = json!(token.to_string());
    }
    Ok(Json(body))
}

/// `GET /pushers`: the user's pushers as they were set.
pub(crate) async fn get_pushers(
    State(state): State<ClientState>,
    Auth(session): Auth,
) -> MatrixResult<Json<Value>> {
    let mut conn = state.db.conn().await?;
    let rows = pushers::pushers_of_user(&mut conn, session.user_id.as_str()).await?;
    let pushers: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let mut pusher = json!({
                "app_id": row.app_id,
                "pushkey": row.pushkey,
                "kind": row.kind,
                "app_display_name": row.app_display_name,
                "device_display_name": row.device_display_name,
                "lang": row.lang,
                "data": serde_json::from_str::<Value>(&row.data).unwrap_or_else(|_| json!({})),
            });
            if let Some(tag) = row.profile_tag {
                pusher["profile_tag"] = json!(tag);
            }
            pusher
        })
        .collect();
    Ok(Json(json!({ "pushers": pushers })))
}

/// The spec's bounds on a pusher's identifiers.
const MAX_APP_ID_CHARS: usize = 64;
const MAX_PUSHKEY_BYTES: usize = 512;
/// The only path a push gateway answers notifications on.
const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// `POST /pushers/set`: checked here, written by the master.
pub(crate) async fn set_pusher(
    State(state): State<ClientState>,
    Auth(session): Auth,
    MatrixJson(body): MatrixJson<Value>,
) -> MatrixResult<Json<Value>> {
    check_pusher(&body, &state.config.push.allowed_address_ranges).await?;
    state.master.set_pusher(SetPusher { user_id: session.user_id.clone(), body }).await?;
    Ok(Json(json!({})))
}

fn required_str<'b>(body: &'b Value, key: &str) -> MatrixResult<&'b str> {
    match body.get(key) {
        None | Some(Value::Null) => Err(MatrixError::missing_param(format!("`{key}` is required"))),
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(MatrixError::invalid_param(format!("`{key}` must be a string"))),
    }
}

/// Refuses a `/pushers/set` body the spec does not allow, or a gateway this server may not reach.
async fn check_pusher(body: &Value, allowed: &[ganglion_config::AddressRange]) -> MatrixResult<()> {
    if !body.is_object() {
        return Err(MatrixError::bad_json("The body must be a JSON object"));
    }
    let app_id = required_str(body, "app_id")?;
    if app_id.is_empty() || app_id.chars().count() > MAX_APP_ID_CHARS {
        return Err(MatrixError::invalid_param(format!(
            "`app_id` must be 1 to {MAX_APP_ID_CHARS} characters"
        )));
    }
    let pushkey = required_str(body, "pushkey")?;
    if pushkey.is_empty() || pushkey.len() > MAX_PUSHKEY_BYTES {
        return Err(MatrixError::invalid_param(format!("`pushkey` must be 1 to {MAX_PUSHKEY_BYTES} bytes")));
    }
    match body.get("kind") {
        // Deleting needs nothing more.
        None | Some(Value::Null) => return Ok(()),
        Some(Value::String(kind)) if kind == "http" => {}
        Some(Value::String(kind)) if kind == "email" => {
            return Err(MatrixError::invalid_param(
                "Email pushers need an email server, and this server has none configured",
            ));
        }
        Some(other) => return Err(MatrixError::invalid_param(format!("Unknown pusher kind {other}"))),
    }
    for key in ["app_display_name", "device_display_name", "lang"] {
        required_str(body, key)?;
    }
    if let Some(tag) = body.get("profile_tag").filter(|tag| !tag.is_null())
        && tag.as_str().is_none_or(|tag| tag.len() > 32)
    {
        return Err(MatrixError::invalid_param("`profile_tag` must be a string of at most 32 bytes"));
    }
    if body.get("append").is_some_and(|append| !append.is_boolean()) {
        return Err(MatrixError::invalid_param("`append` must be a boolean"));
    }
    let data = match body.get("data") {
        Some(Value::Object(data)) => data,
        None | Some(Value::Null) => return Err(MatrixError::missing_param("`data` is required")),
        Some(_) => return Err(MatrixError::invalid_param("`data` must be an object")),
    };
    if let Some(format) = data.get("format")
        && format.as_str() != Some("event_id_only")
    {
        return Err(MatrixError::invalid_param("`data.format` may only be \"event_id_only\""));
    }
    let url = match data.get("url") {
        Some(Value::String(url)) => url,
        None | Some(Value::Null) => {
            return Err(MatrixError::missing_param("An http pusher needs `data.url`"));
        }
        Some(_) => return Err(MatrixError::invalid_param("`data.url` must be a string")),
    };
    let url = ganglion_push_gateway::Url::parse(url)
        .map_err(|_| MatrixError::invalid_param("`data.url` is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.path() != NOTIFY_PATH {
        return Err(MatrixError::invalid_param(format!(
            "`data.url` must be an http(s) URL ending in {NOTIFY_PATH}"
        )));
    }
    ganglion_push_gateway::check_gateway(&url, allowed)
        .await
        .map_err(|error| MatrixError::invalid_param(format!("The push gateway {error}")))?;
    Ok(())
}
