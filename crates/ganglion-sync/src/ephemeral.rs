//! The `ephemeral` section of a joined room: `m.typing` (the room's whole typing set) and
//! `m.receipt` (the receipts that moved in the range, aggregated per event).

use std::collections::HashMap;

use ganglion_storage::streams::ReceiptRow;
use serde_json::{Map, Value, json};

/// Private receipts are shown to their owner only.
const PRIVATE_READ: &str = "m.read.private";

/// The `m.typing` event for the users typing in a room.
pub(crate) fn typing_event(user_ids: Vec<String>) -> Value {
    json!({ "type": "m.typing", "content": { "user_ids": user_ids } })
}

/// Groups receipt rows by room id.
pub(crate) fn receipts_by_room(rows: Vec<ReceiptRow>) -> HashMap<String, Vec<ReceiptRow>> {
    let mut by_room: HashMap<String, Vec<ReceiptRow>> = HashMap::new();
    for row in rows {
        by_room.entry(row.room_id.clone()).or_default().push(row);
    }
    by_room
}

/// The `m.receipt` event `{event_id: {type: {user: {ts, thread_id?}}}}` of one room's receipts
/// as `viewer` may see them, or `None` when none is visible.
pub(crate) fn receipt_event(rows: &[ReceiptRow], viewer: &str) -> Option<Value> {
    let mut content = Map::new();
    for row in rows {
        if row.receipt_type == PRIVATE_READ && row.user_id != viewer {
            continue;
        }
        let mut receipt = Map::new();
        receipt.insert("ts".into(), json!(row.ts));
        if !row.thread_id.is_empty() {
            receipt.insert("thread_id".into(), json!(row.thread_id));
        }
        let by_type = content.entry(row.event_id.clone()).or_insert_with(|| Value::Object(Map::new()));
        let Some(by_type) = by_type.as_object_mut() else { continue };
        let by_user = by_type.entry(row.receipt_type.clone()).or_insert_with(|| Value::Object(Map::new()));
        if let Some(by_user) = by_user.as_object_mut() {
            by_user.insert(row.user_id.clone(), Value::Object(receipt));
        }
    }
    (!content.is_empty()).then(|| json!({ "type": "m.receipt", "content": content }))
}
