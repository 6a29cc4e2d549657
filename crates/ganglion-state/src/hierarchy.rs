//! Spaces: what a room shows of itself in a space hierarchy (its directory summary, its
//! `m.space.child` events and who its join rule lets in), for other servers' `/hierarchy`
//! requests.

use ganglion_storage::{Conn, rooms::RoomRow};
use serde_json::{Value, json};

use crate::{Caches, Snapshot, directory::DirectoryError};

/// A room's summary for a hierarchy: its directory entry, with `children_state` (its
/// `m.space.child` events naming at least one server, stripped, with their `origin_server_ts`)
/// and, under a restricted join rule, `allowed_room_ids`.
pub struct SpaceRoom {
    pub summary: Value,
    /// The rooms of `children_state`, in state key order, with whether each is suggested.
    pub children: Vec<(String, bool)>,
    pub join_rule: Option<String>,
    pub allowed_room_ids: Vec<String>,
}

pub async fn space_room(
    caches: &Caches,
    conn: &mut Conn,
    room: &RoomRow,
) -> Result<SpaceRoom, DirectoryError> {
    let mut summary = crate::directory::room_summary(caches, conn, room).await?;
    let snapshot = match room.current_snapshot_nid {
        Some(nid) => caches.snapshot(conn, nid).await?,
        None => Snapshot::empty(),
    };
    let mut children_state = Vec::new();
    let mut children = Vec::new();
    if let Some(child_type) = caches.existing_type_nid(conn, "m.space.child").await? {
        let nids: Vec<_> = snapshot
            .entries()
            .filter(|entry| entry.type_nid == child_type)
            .map(|entry| entry.event_nid)
            .collect();
        let mut events = caches.events(conn, &nids).await?;
        events.sort_by(|a, b| a.pdu.state_key.cmp(&b.pdu.state_key));
        for event in events {
            let content = caches.visible_content(conn, &event).await?;
            let names_a_server = content
                .get("via")
                .and_then(Value::as_array)
                .is_some_and(|via| via.iter().any(Value::is_string));
            let Some(child) = event.pdu.state_key.clone().filter(|_| names_a_server) else { continue };
            children.push((child.clone(), content.get("suggested") == Some(&json!(true))));
            children_state.push(json!({
                "type": "m.space.child",
                "state_key": child,
                "content": content,
                "sender": event.pdu.sender.as_str(),
                "origin_server_ts": u64::from(event.pdu.origin_server_ts.0),
            }));
        }
    }
    let join_rules = match caches.state_event(conn, &snapshot, "m.room.join_rules", "").await? {
        Some(event) => caches.visible_content(conn, &event).await?,
        None => Value::Null,
    };
    let join_rule = join_rules.get("join_rule").and_then(Value::as_str).map(str::to_owned);
    let allowed_room_ids: Vec<String> = join_rules
        .get("allow")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|allow| allow.get("type").and_then(Value::as_str) == Some("m.room_membership"))
        .filter_map(|allow| allow.get("room_id").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let encryption = match caches.state_event(conn, &snapshot, "m.room.encryption", "").await? {
        Some(event) => caches.visible_content(conn, &event).await?.get("algorithm").cloned(),
        None => None,
    };
    if let Some(entry) = summary.as_object_mut() {
        entry.insert("children_state".into(), Value::Array(children_state));
        entry.insert("room_version".into(), json!(room.room_version));
        if let Some(algorithm) = encryption.filter(Value::is_string) {
            entry.insert("encryption".into(), algorithm);
        }
        if matches!(join_rule.as_deref(), Some("restricted" | "knock_restricted")) {
            entry.insert("allowed_room_ids".into(), json!(allowed_room_ids));
        }
    }
    Ok(SpaceRoom { summary, children, join_rule, allowed_room_ids })
}
