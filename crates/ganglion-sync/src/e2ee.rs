//! The end-to-end encryption parts of a sync: the device's to-device messages, the device lists
//! that changed, and the device's one-time and fallback key state; and `GET /keys/changes`,
//! which reports device-list changes between two tokens the same way.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use axum::{Json, extract::State};
use ganglion_http::{Auth, MatrixError, MatrixQuery, MatrixResult};
use ganglion_state::KeyCounts;
use ganglion_storage::{
    Connect, LazyConn, keys as key_store, rooms as room_store, to_device as to_device_store,
};
use ganglion_types::{RoomNid, StreamKind, StreamPosition, SyncToken};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{SyncState, compute::SyncError};

/// At most this many to-device messages per response; the rest come with the next sync.
pub(crate) const TO_DEVICE_LIMIT: i64 = 100;

/// The device's to-device messages in `after < position <= up_to`, at most `limit`.
/// Messages up to `after` were delivered in an earlier response the client acknowledged by
/// sending its token, so they are deleted. Returns the messages and, when more are waiting, the
/// position of the last one: the next token must not pass the messages left out. Memory (the
/// user's latest to-device row, and how far the device is known to have none left) spares the
/// database both questions in the usual sync that has no message.
pub(crate) async fn to_device(
    state: &SyncState,
    conn: &mut LazyConn,
    (user_id, device_id): (&str, &str),
    (after, up_to): (i64, i64),
    limit: i64,
) -> Result<(Vec<Value>, Option<StreamPosition>), SyncError> {
    let none_after =
        |position: i64| state.recent.changed_after(StreamKind::ToDevice, [user_id], position) == Some(false);
    let known_clean = state
        .memory
        .to_device_clean(user_id, device_id)
        .is_some_and(|clean| clean >= after || none_after(clean));
    if after > 0 && !known_clean {
        // Deleting is a write: look first, so a sync with nothing to acknowledge stays a read.
        if !to_device_store::to_device_messages_for(conn.connection().await?, user_id, device_id, 0, after, 1)
            .await?
            .is_empty()
        {
            to_device_store::delete_to_device_messages_up_to(
                conn.connection().await?,
                user_id,
                device_id,
                after,
            )
            .await?;
        }
        state.memory.to_device_clean_up_to(user_id, device_id, after);
    }
    if after >= up_to || none_after(after) {
        return Ok((Vec::new(), None));
    }
    let rows = to_device_store::to_device_messages_for(
        conn.connection().await?,
        user_id,
        device_id,
        after,
        up_to,
        limit,
    )
    .await?;
    let truncated = rows.len() as i64 == limit;
    let last = rows.last().map(|row| StreamPosition(row.stream_pos));
    let events = rows
        .into_iter()
        .map(|row| {
            let content: Value = serde_json::from_str(&row.content_json).unwrap_or_else(|_| json!({}));
            json!({ "sender": row.sender, "type": row.event_type, "content": content })
        })
        .collect();
    Ok((events, if truncated { last } else { None }))
}

/// Users whose device lists the syncing user should fetch again (`changed`) or may forget
/// (`left`) between two tokens: users sharing a room whose devices or keys changed, users who
/// came to share a room (they or the user joined or were invited), and users who no longer
/// share any room.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct DeviceListChanges {
    pub changed: BTreeSet<String>,
    pub left: BTreeSet<String>,
}

impl DeviceListChanges {
    pub(crate) fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.left.is_empty()
    }
}

fn shares(membership: &str) -> bool {
    membership == "join" || membership == "invite"
}

/// `rooms`: every room the user has a membership in (left ones too, as leaving one is a change);
/// `members_moved`: false when the caller knows no member event happened in them in the range;
/// `devices_moved`: false when it knows no device list of a room-mate changed in the range.
pub(crate) async fn device_list_changes(
    conn: &mut LazyConn,
    user_id: &str,
    rooms: &[RoomNid],
    (members_moved, devices_moved): (bool, bool),
    since: &SyncToken,
    next: &SyncToken,
) -> Result<DeviceListChanges, SyncError> {
    let mut changes = DeviceListChanges::default();
    let devices_moved = devices_moved && since.device_lists < next.device_lists;
    let memberships = if members_moved && since.events < next.events && !rooms.is_empty() {
        room_store::membership_changes_between(conn.connection().await?, rooms, since.events.0, next.events.0)
            .await?
    } else {
        Vec::new()
    };
    if !devices_moved && memberships.is_empty() {
        return Ok(changes);
    }
    let sharing: BTreeSet<String> =
        room_store::users_sharing_a_room_with(conn.connection().await?, user_id).await?.into_iter().collect();
    if devices_moved {
        let sharing: Vec<String> = sharing.iter().cloned().collect();
        let moved = key_store::users_with_device_list_changes_among(
            conn.connection().await?,
            &sharing,
            since.device_lists.0,
            next.device_lists.0,
        )
        .await?;
        changes.changed.extend(moved.into_iter().map(|(user, _)| user));
    }
    for membership in memberships {
        if membership.user_id == user_id {
            // The user's own membership: everyone in that room is new to it, or gone.
            let members =
                room_store::memberships_of_room(conn.connection().await?, membership.room_nid, None).await?;
            for member in members.into_iter().filter(|member| shares(&member.membership)) {
                if member.user_id == user_id {
                    continue;
                }
                if shares(&membership.membership) {
                    changes.changed.insert(member.user_id);
                } else if !sharing.contains(&member.user_id) {
                    changes.left.insert(member.user_id);
                }
            }
        } else if shares(&membership.membership) {
            changes.changed.insert(membership.user_id);
        } else if !sharing.contains(&membership.user_id) {
            changes.left.insert(membership.user_id);
        }
    }
    changes.changed.retain(|user| !changes.left.contains(user));
    changes.left.remove(user_id);
    Ok(changes)
}

/// The device's unclaimed one-time keys by algorithm (`signed_curve25519` always there) and the
/// algorithms of its unused fallback keys; cached until the master reports a change.
pub(crate) async fn key_counts(
    state: &SyncState,
    conn: &mut LazyConn,
    user_id: &str,
    device_id: &str,
) -> Result<KeyCounts, SyncError> {
    if let Some(counts) = state.caches.key_counts(user_id, device_id) {
        return Ok(counts);
    }
    let generation = state.caches.key_counts_generation();
    let (one_time, fallback) =
        key_store::device_key_state(conn.connection().await?, user_id, device_id).await?;
    let mut counts = BTreeMap::from([("signed_curve25519".to_owned(), 0)]);
    counts.extend(one_time);
    let counts = Arc::new((counts, fallback));
    state.caches.remember_key_counts(generation, user_id, device_id, counts.clone());
    Ok(counts)
}

#[derive(Deserialize)]
pub(crate) struct ChangesQuery {
    from: String,
    to: String,
}

/// `GET /keys/changes`: the device-list changes between two sync tokens.
pub(crate) async fn changes(
    State(state): State<SyncState>,
    Auth(session): Auth,
    MatrixQuery(query): MatrixQuery<ChangesQuery>,
) -> MatrixResult<Json<Value>> {
    let parse = |token: &str, name: &str| {
        SyncToken::parse(token).map_err(|_| MatrixError::invalid_param(format!("Invalid `{name}` token")))
    };
    let (from, to) = (parse(&query.from, "from")?, parse(&query.to, "to")?);
    let mut conn = state.db.lazy();
    let rooms: Vec<RoomNid> =
        ganglion_storage::streams::rooms_of_user(conn.connection().await?, session.user_id.as_str())
            .await?
            .iter()
            .map(|row| row.room_nid)
            .collect();
    let changes =
        device_list_changes(&mut conn, session.user_id.as_str(), &rooms, (true, true), &from, &to).await?;
    Ok(Json(json!({ "changed": changes.changed, "left": changes.left })))
}
