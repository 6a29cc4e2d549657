//! Turning stored events into what clients see: redactions applied, `prev_content` for state
//! events, and the sender's own `transaction_id`.

use std::collections::{HashMap, HashSet};

use ganglion_events::{
    client_event,
    ruma::{RoomVersionId, room_version_rules::RedactionRules},
};
use ganglion_storage::Conn;
use ganglion_types::{EventNid, RoomNid};
use serde_json::{Map, Value, json};

use crate::{Caches, Result, StoredEvent};

impl Caches {
    /// The version of a room (cached; versions never change).
    pub async fn room_version(&self, conn: &mut Conn, room_nid: RoomNid) -> Result<Option<RoomVersionId>> {
        if let Some(version) = self.room_versions.get(&room_nid) {
            return Ok(Some(version));
        }
        let Some(room) = ganglion_storage::rooms::room_by_nid(conn, room_nid).await? else { return Ok(None) };
        let version = RoomVersionId::try_from(room.room_version.as_str())
            .map_err(|e| crate::StateError::CorruptEvent(room.room_id.clone(), e.to_string()))?;
        self.room_versions.insert(room_nid, version.clone());
        Ok(Some(version))
    }

    async fn redaction_rules(&self, conn: &mut Conn, room_nid: RoomNid) -> Result<RedactionRules> {
        let version = self.room_version(conn, room_nid).await?.unwrap_or(RoomVersionId::V11);
        Ok(version.rules().map(|rules| rules.redaction).unwrap_or(RedactionRules::V11))
    }

    /// Client-format events. `viewer` (user id, device id) gets `unsigned.transaction_id` on
    /// the events it sent from that device.
    pub async fn client_events(
        &self,
        conn: &mut Conn,
        events: &[StoredEvent],
        viewer: Option<(&str, &str)>,
    ) -> Result<Vec<Value>> {
        let mut txn_ids: HashMap<String, String> = HashMap::new();
        if let Some((user_id, device_id)) = viewer {
            // The writer records the transaction id (or its absence) of every event it persists;
            // only events it did not (older than this process) need the database.
            let mut unknown = Vec::new();
            for event in events.iter().filter(|e| e.row.sender == user_id) {
                match self.event_txns.get(&event.row.event_nid) {
                    Some(Some((device, txn_id))) if &*device == device_id => {
                        txn_ids.insert(event.row.event_id.clone(), txn_id.to_string());
                    }
                    Some(_) => {}
                    None => unknown.push(event.row.event_id.clone()),
                }
            }
            if !unknown.is_empty() {
                txn_ids.extend(
                    ganglion_storage::events::txn_ids_of_events(conn, user_id, device_id, &unknown).await?,
                );
            }
        }
        let replaced: Vec<EventNid> =
            events.iter().filter_map(|e| e.row.replaces_nid).collect::<HashSet<_>>().into_iter().collect();
        let replaced: HashMap<EventNid, StoredEvent> =
            self.events(conn, &replaced).await?.into_iter().map(|e| (e.row.event_nid, e)).collect();
        let mut formatted = Vec::with_capacity(events.len());
        for event in events {
            let mut unsigned = Map::new();
            if let Some(txn_id) = txn_ids.get(&event.row.event_id) {
                unsigned.insert("transaction_id".into(), json!(txn_id));
            }
            if let Some(previous) = event.row.replaces_nid.and_then(|nid| replaced.get(&nid)) {
                unsigned.insert("replaces_state".into(), json!(previous.row.event_id));
                unsigned.insert("prev_content".into(), self.visible_content(conn, previous).await?);
                unsigned.insert("prev_sender".into(), json!(previous.row.sender));
            }
            let redaction = match &event.row.redacted_by {
                Some(redaction_id) => match self.event_by_id(conn, redaction_id).await? {
                    Some(redaction) => {
                        let rules = self.redaction_rules(conn, event.row.room_nid).await?;
                        let because = client_event(&redaction.pdu, None, Map::new());
                        Some((rules, because))
                    }
                    None => None,
                },
                None => None,
            };
            let value = match &redaction {
                Some((rules, because)) => client_event(&event.pdu, Some((rules, because.clone())), unsigned),
                None => client_event(&event.pdu, None, unsigned),
            };
            formatted.push(value);
        }
        Ok(formatted)
    }

    /// The content clients see for an event: redacted if it was redacted.
    pub async fn visible_content(&self, conn: &mut Conn, event: &StoredEvent) -> Result<Value> {
        if event.row.redacted_by.is_some() {
            let rules = self.redaction_rules(conn, event.row.room_nid).await?;
            return Ok(ganglion_events::redacted_json(&event.pdu, &rules));
        }
        Ok(event.pdu.content_value())
    }
}
