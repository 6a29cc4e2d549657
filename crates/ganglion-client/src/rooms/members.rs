//! Member lists: `/members` (at a point in time, filtered by membership), `/joined_members`
//! and the user's `/joined_rooms`.

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_http::MatrixQuery;
use ganglion_http::{Auth, MatrixResult};
use ganglion_state::StoredEvent;
use ganglion_storage::{events as event_store, rooms as room_store};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::access;
use crate::ClientState;

const MEMBERSHIPS: [&str; 5] = ["join", "invite", "knock", "leave", "ban"];

#[derive(Deserialize)]
pub(crate) struct MembersQuery {
    at: Option<String>,
    membership: Option<String>,
    not_membership: Option<String>,
}

/// Whether a member with `membership` is listed. Given both, the spec makes the two filters an
/// "or": the membership is `only`, or it is not `not`.
pub(crate) fn membership_wanted(membership: &str, only: Option<&str>, not: Option<&str>) -> bool {
    match (only, not) {
        (None, None) => true,
        (Some(only), None) => membership == only,
        (None, Some(not)) => membership != not,
        (Some(only), Some(not)) => membership == only || membership != not,
    }
}

/// `GET /rooms/{roomId}/members`.
pub(crate) async fn members(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    MatrixQuery(query): MatrixQuery<MembersQuery>,
) -> MatrixResult<Json<Value>> {
    let only = query
        .membership
        .as_deref()
        .map(|value| access::one_of(value, &MEMBERSHIPS, "membership"))
        .transpose()?;
    let not = query
        .not_membership
        .as_deref()
        .map(|value| access::one_of(value, &MEMBERSHIPS, "not_membership"))
        .transpose()?;
    let at = query.at.as_deref().map(|token| access::parse_stream_point(token, "at")).transpose()?;
    let user_id = session.user_id.as_str();

    let mut conn = state.db.conn().await?;
    let readable = access::readable_room(&state, &mut conn, &room_id, user_id).await?;
    let snapshot_nid = match at {
        // The state after the last event at or before the point, but never past a leave.
        Some(point) => {
            let point = readable.left_at.map_or(point, |left_at| point.min(left_at));
            let latest =
                event_store::latest_event_in_room_at(&mut conn, readable.room.room_nid, point).await?;
            latest.map(|event| event.snapshot_nid)
        }
        None => readable.snapshot_nid,
    };
    let snapshot = access::snapshot(&state, &mut conn, snapshot_nid).await?;
    let mut listed: Vec<StoredEvent> = Vec::new();
    for event in state.caches.state_events(&mut conn, &snapshot, Some("m.room.member")).await? {
        let content = state.caches.visible_content(&mut conn, &event).await?;
        let membership = content.get("membership").and_then(Value::as_str).unwrap_or("");
        if membership_wanted(membership, only, not) {
            listed.push(event);
        }
    }
    listed.sort_by(|a, b| a.pdu.state_key.cmp(&b.pdu.state_key));
    let viewer = (user_id, session.device_id.as_str());
    let chunk = state.caches.client_events(&mut conn, &listed, Some(viewer)).await?;
    Ok(Json(json!({ "chunk": chunk })))
}

/// `GET /rooms/{roomId}/joined_members`: only for users joined to the room.
pub(crate) async fn joined_members(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
) -> MatrixResult<Json<Value>> {
    access::room_id(&room_id)?;
    let mut conn = state.db.conn().await?;
    let room = access::joined_room(&mut conn, &room_id, session.user_id.as_str()).await?;
    let joined = room_store::memberships_of_room(&mut conn, room.room_nid, Some("join")).await?;
    let nids: Vec<_> = joined.iter().map(|membership| membership.event_nid).collect();
    let mut members = Map::new();
    for event in state.caches.events(&mut conn, &nids).await? {
        let Some(user_id) = event.pdu.state_key.clone() else { continue };
        let content = state.caches.visible_content(&mut conn, &event).await?;
        let mut profile = Map::new();
        for (field, key) in [("displayname", "display_name"), ("avatar_url", "avatar_url")] {
            if let Some(value) = content.get(field).and_then(Value::as_str) {
                profile.insert(key.into(), json!(value));
            }
        }
        members.insert(user_id, Value::Object(profile));
    }
    Ok(Json(json!({ "joined": members })))
}

/// `GET /joined_rooms`.
pub(crate) async fn joined_rooms(
    State(state): State<ClientState>,
    Auth(session): Auth,
) -> MatrixResult<Json<Value>> {
    let mut conn = state.db.conn().await?;
    let memberships = room_store::memberships_of_user(&mut conn, session.user_id.as_str()).await?;
    let joined: Vec<_> =
        memberships.into_iter().filter(|m| m.membership == "join").map(|m| m.room_nid).collect();
    let mut room_ids: Vec<String> =
        room_store::rooms_by_nid(&mut conn, &joined).await?.into_iter().map(|room| room.room_id).collect();
    room_ids.sort();
    Ok(Json(json!({ "joined_rooms": room_ids })))
}
