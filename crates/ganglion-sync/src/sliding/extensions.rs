//! Sliding sync extensions: `to_device` (with its own `since`), `e2ee` (device lists between the
//! connection's responses, the device's key counts), `account_data`, `receipts` and `typing`
//! (for the rooms in each extension's scope). Each reuses the `/sync` computation of its part.

use std::collections::{BTreeMap, HashMap, HashSet};

use ganglion_state::KeyCounts;
use ganglion_storage::{Connect, LazyConn, streams as stream_store};
use ganglion_types::{RoomNid, StreamKind, StreamPosition, SyncToken};
use serde_json::{Value, json};

use super::request::{Extensions, ScopedExtension};
use crate::{
    SyncState,
    body::ObjectWriter,
    compute::{self, SyncError},
    e2ee::{self, DeviceListChanges},
    ephemeral,
};

/// Global account data events, and room account data events by room id.
type AccountData = (Vec<Value>, BTreeMap<String, Vec<Value>>);

#[derive(Default)]
pub(crate) struct ExtensionsOut {
    to_device: Option<(String, Vec<Value>)>,
    e2ee: Option<(DeviceListChanges, KeyCounts)>,
    account_data: Option<AccountData>,
    receipts: Option<BTreeMap<String, Value>>,
    typing: Option<BTreeMap<String, Value>>,
}

impl ExtensionsOut {
    /// Whether nothing in it is news (key counts alone are not: they come with every answer).
    pub(crate) fn is_empty(&self) -> bool {
        self.to_device.as_ref().is_none_or(|(_, events)| events.is_empty())
            && self.e2ee.as_ref().is_none_or(|(lists, _)| lists.is_empty())
            && self.account_data.as_ref().is_none_or(|(global, rooms)| global.is_empty() && rooms.is_empty())
            && self.receipts.as_ref().is_none_or(BTreeMap::is_empty)
            && self.typing.as_ref().is_none_or(BTreeMap::is_empty)
    }

    pub(crate) fn write(&self, object: &mut ObjectWriter<'_>) {
        if let Some((next_batch, events)) = &self.to_device {
            object.object("to_device", |to_device| {
                to_device.member("next_batch", next_batch);
                to_device.member("events", events);
            });
        }
        if let Some((lists, counts)) = &self.e2ee {
            let (one_time, fallback) = counts.as_ref();
            object.object("e2ee", |e2ee| {
                e2ee.object("device_lists", |device_lists| {
                    device_lists.member("changed", &lists.changed);
                    device_lists.member("left", &lists.left);
                });
                e2ee.member("device_one_time_keys_count", one_time);
                e2ee.member("device_unused_fallback_key_types", fallback);
            });
        }
        if let Some((global, rooms)) = &self.account_data {
            object.object("account_data", |data| {
                data.member("global", global);
                data.member("rooms", rooms);
            });
        }
        if let Some(receipts) = &self.receipts {
            object.object("receipts", |section| section.member("rooms", receipts));
        }
        if let Some(typing) = &self.typing {
            object.object("typing", |section| section.member("rooms", typing));
        }
    }
}

/// A room the response covers: its id, the lists whose ranges hold it, whether it is
/// subscribed to, whether it went out whole in this response, and its timeline's event ids.
pub(crate) struct ScopedRoom<'a> {
    pub room_id: &'a str,
    pub lists: std::collections::BTreeSet<&'a str>,
    pub subscribed: bool,
    pub initial: bool,
    /// The positions of the last response that covered the room (`None` when `initial`): its
    /// receipts, typing and account data are sent from there, which is older than the
    /// connection's previous response when the room was out of every range meanwhile.
    pub covered_before: Option<&'a SyncToken>,
    pub timeline_event_ids: &'a [String],
}

pub(crate) struct ExtensionContext<'a> {
    pub state: &'a SyncState,
    pub user_id: &'a str,
    pub device_id: &'a str,
    /// The connection's previous response's positions (`None` on a new connection).
    pub since: Option<&'a SyncToken>,
    pub next: SyncToken,
    /// Every room the user has a membership in, for device-list changes.
    pub all_rooms: &'a [stream_store::UserRoomRow],
    pub ignored: &'a HashSet<String>,
}

pub(crate) async fn extensions(
    cx: &ExtensionContext<'_>,
    conn: &mut LazyConn,
    request: &Extensions,
    rooms: &[ScopedRoom<'_>],
) -> Result<ExtensionsOut, ganglion_http::MatrixError> {
    let mut out = ExtensionsOut::default();
    if let Some(to_device) = request.to_device.as_ref().filter(|ext| ext.enabled == Some(true)) {
        let after: i64 = match to_device.since.as_deref() {
            None | Some("") => 0,
            Some(since) => since
                .parse()
                .map_err(|_| ganglion_http::MatrixError::invalid_param("Invalid to_device `since`"))?,
        };
        let limit =
            to_device.limit.unwrap_or(e2ee::TO_DEVICE_LIMIT as u64).clamp(1, e2ee::TO_DEVICE_LIMIT as u64);
        let up_to = cx.next.to_device.0.max(after);
        let (events, stop) =
            e2ee::to_device(cx.state, conn, (cx.user_id, cx.device_id), (after, up_to), limit as i64).await?;
        let next_batch = stop.unwrap_or(StreamPosition(up_to)).0;
        out.to_device = Some((next_batch.to_string(), events));
    }
    if request.e2ee.as_ref().is_some_and(|ext| ext.enabled == Some(true)) {
        let lists = match cx.since {
            Some(since) => {
                // Memory tells when no member event and no device-list row in the range can
                // concern the user, which spares the database on most wake-ups.
                let recent = &cx.state.recent;
                let room_ids = cx.all_rooms.iter().map(|row| row.room_id.as_str());
                let members_moved =
                    recent.room_membership_changed_after(room_ids, since.events.0) != Some(false);
                let devices_moved = since.device_lists < cx.next.device_lists
                    && (members_moved
                        || recent.changed_after(
                            StreamKind::DeviceLists,
                            compute::sharing_keys(cx.user_id, cx.all_rooms),
                            since.device_lists.0,
                        ) != Some(false));
                let rooms: Vec<RoomNid> = cx.all_rooms.iter().map(|row| row.room_nid).collect();
                e2ee::device_list_changes(
                    conn,
                    cx.user_id,
                    &rooms,
                    (members_moved, devices_moved),
                    since,
                    &cx.next,
                )
                .await?
            }
            None => DeviceListChanges::default(),
        };
        let counts = e2ee::key_counts(cx.state, conn, cx.user_id, cx.device_id).await?;
        out.e2ee = Some((lists, counts));
    }
    if let Some(scope) = ScopedExtension::on(&request.account_data) {
        out.account_data = Some(account_data(cx, conn, scope, rooms).await?);
    }
    if let Some(scope) = ScopedExtension::on(&request.receipts) {
        out.receipts = Some(receipts(cx, conn, scope, rooms).await?);
    }
    if let Some(scope) = ScopedExtension::on(&request.typing) {
        let mut typing = BTreeMap::new();
        for room in rooms.iter().filter(|room| scope.covers(room.room_id, &room.lists, room.subscribed)) {
            let since_typing = match room.covered_before {
                Some(since) if since.typing_epoch == cx.next.typing_epoch => since.typing,
                _ => StreamPosition::ZERO,
            };
            let changed = cx.state.typing.changed_between(room.room_id, since_typing, cx.next.typing);
            if !changed && !room.initial {
                continue;
            }
            let mut users = cx.state.typing.typing_in_room(room.room_id);
            users.retain(|user| !cx.ignored.contains(user));
            if changed || !users.is_empty() {
                typing.insert(room.room_id.to_owned(), ephemeral::typing_event(users));
            }
        }
        out.typing = Some(typing);
    }
    Ok(out)
}

/// Global account data that changed since the connection's last response (all of it, and the
/// server's push rules, on a new connection), and the room account data of the rooms in scope:
/// all of it for a room that went out whole, what changed otherwise.
async fn account_data(
    cx: &ExtensionContext<'_>,
    conn: &mut LazyConn,
    scope: &ScopedExtension,
    rooms: &[ScopedRoom<'_>],
) -> Result<AccountData, SyncError> {
    let in_scope: Vec<&ScopedRoom<'_>> =
        rooms.iter().filter(|room| scope.covers(room.room_id, &room.lists, room.subscribed)).collect();
    let global_after = cx.since.map_or(0, |since| since.account_data.0);
    let live: HashMap<&str, i64> = in_scope
        .iter()
        .filter_map(|room| Some((room.room_id, room.covered_before?.account_data.0)))
        .collect();
    let after = live.values().copied().fold(global_after, i64::min);
    let up_to = cx.next.account_data.0;
    let mut global = Vec::new();
    let mut by_room: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let untouched = cx.state.recent.account_data_changed_after(cx.user_id, after) == Some(false);
    if after < up_to && !untouched {
        for row in
            stream_store::account_data_between(conn.connection().await?, cx.user_id, after, up_to).await?
        {
            if row.room_id.is_empty() {
                if row.stream_pos > global_after {
                    global.push(compute::account_data_event(&row));
                }
            } else if live.get(row.room_id.as_str()).is_some_and(|room_after| row.stream_pos > *room_after) {
                by_room.entry(row.room_id.clone()).or_default().push(compute::account_data_event(&row));
            }
        }
    }
    if cx.since.is_none() && !global.iter().any(|data| data["type"] == "m.push_rules") {
        let user_id = ganglion_events::ruma::UserId::parse(cx.user_id).map_err(|e| {
            SyncError::Storage(ganglion_storage::StorageError::Corrupt(format!("user id: {e}")))
        })?;
        global.push(json!({
            "type": "m.push_rules",
            "content": { "global": ganglion_events::push_rules::default_ruleset(&user_id) },
        }));
    }
    // Rooms new to the client get all of their account data.
    let whole: HashSet<&str> = in_scope.iter().filter(|room| room.initial).map(|room| room.room_id).collect();
    if !whole.is_empty() && up_to > 0 {
        for row in stream_store::account_data_between(conn.connection().await?, cx.user_id, 0, up_to).await? {
            if whole.contains(row.room_id.as_str()) {
                by_room.entry(row.room_id.clone()).or_default().push(compute::account_data_event(&row));
            }
        }
    }
    Ok((global, by_room))
}

/// Receipts of the rooms in scope: those that moved since the connection's last response, and
/// for a room that went out whole, the receipts on its timeline's events and the user's own.
async fn receipts(
    cx: &ExtensionContext<'_>,
    conn: &mut LazyConn,
    scope: &ScopedExtension,
    rooms: &[ScopedRoom<'_>],
) -> Result<BTreeMap<String, Value>, SyncError> {
    let in_scope: Vec<&ScopedRoom<'_>> =
        rooms.iter().filter(|room| scope.covers(room.room_id, &room.lists, room.subscribed)).collect();
    let mut rows_by_room: HashMap<String, Vec<stream_store::ReceiptRow>> = HashMap::new();
    let up_to = cx.next.receipts.0;
    // Rooms the client holds, by where their receipts were sent up to: one group, unless some
    // were out of every range for a while.
    let mut live: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for room in &in_scope {
        if let Some(covered) = room.covered_before {
            live.entry(covered.receipts.0).or_default().push(room.room_id.to_owned());
        }
    }
    for (after, live) in live.into_iter().filter(|(after, _)| *after < up_to) {
        let untouched =
            cx.state.recent.changed_after(StreamKind::Receipts, live.iter().map(String::as_str), after)
                == Some(false);
        if !untouched {
            let rows = match cx.state.recent.receipts_between(&live, after, up_to) {
                Some(rows) => rows,
                None => stream_store::receipts_between(conn.connection().await?, &live, after, up_to).await?,
            };
            for (room_id, rows) in ephemeral::receipts_by_room(rows) {
                rows_by_room.entry(room_id).or_default().extend(rows);
            }
        }
    }
    let whole: Vec<&&ScopedRoom<'_>> = in_scope.iter().filter(|room| room.initial).collect();
    if !whole.is_empty() && up_to > 0 {
        let ids: Vec<String> = whole.iter().map(|room| room.room_id.to_owned()).collect();
        let rows = stream_store::receipts_between(conn.connection().await?, &ids, 0, up_to).await?;
        let mut by_room = ephemeral::receipts_by_room(rows);
        for room in whole {
            let Some(mut rows) = by_room.remove(room.room_id) else { continue };
            let shown: HashSet<&str> = room.timeline_event_ids.iter().map(String::as_str).collect();
            rows.retain(|row| row.user_id == cx.user_id || shown.contains(row.event_id.as_str()));
            rows_by_room.entry(room.room_id.to_owned()).or_default().extend(rows);
        }
    }
    let mut out = BTreeMap::new();
    for (room_id, mut rows) in rows_by_room {
        rows.retain(|row| !cx.ignored.contains(&row.user_id));
        if let Some(event) = ephemeral::receipt_event(&rows, cx.user_id) {
            out.insert(room_id, event);
        }
    }
    Ok(out)
}
