//! The push module's reads: `/notifications`, the events the user's push rules notified them
//! of, as the master decided when each event was written.

use axum::{Json, extract::State};
use ganglion_http::{Auth, MatrixError, MatrixQuery, MatrixResult, Route};
use ganglion_storage::push_actions;
use ganglion_types::EndpointClass::ClientRead;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::ClientState;

pub(crate) fn routes() -> Vec<Route<ClientState>> {
    vec![Route::get("/_matrix/client/v3/notifications", ClientRead, notifications)]
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
    // Rows this worker cannot show yet (its events position is behind) wait for the next page.
    let head = state.positions.current().events.0;
    let mut rows =
        push_actions::notifications_of_user(&mut conn, user_id, before, limit, only_highlight).await?;
    rows.retain(|row| row.stream_pos <= head);
    let nids: Vec<_> = rows.iter().map(|row| row.event_nid).collect();
    let events = state.caches.events(&mut conn, &nids).await?;
    let viewer = (user_id, session.device_id.as_str());
    let formatted = state.caches.client_events(&mut conn, &events, Some(viewer)).await?;
    let by_nid: std::collections::HashMap<_, _> =
        events.iter().map(|event| event.row.event_nid).zip(formatted).collect();
    let next_token = (rows.len() as i64 == limit).then(|| rows.last().map(|row| row.stream_pos.to_string()));
    let notifications: Vec<Value> = rows
        .into_iter()
        .filter_map(|row| {
            let event = by_nid.get(&row.event_nid)?.clone();
            let actions: Value = serde_json::from_str(&row.actions).unwrap_or_else(|_| json!([]));
            Some(json!({
                "actions": actions,
                "event": event,
                "read": row.read,
                "room_id": row.room_id,
                "ts": row.ts,
            }))
        })
        .collect();
    let mut body = json!({ "notifications": notifications });
    if let Some(Some(token)) = next_token {
        body["next_token"] = json!(token);
    }
    Ok(Json(body))
}
