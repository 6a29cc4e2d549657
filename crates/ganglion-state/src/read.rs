//! Turning stored events into what clients see: redactions applied, `prev_content` for state
//! events, and the sender's own `transaction_id`.

use std::{collections::HashMap, sync::Arc};

use ganglion_events::{
    client_event,
    ruma::{RoomVersionId, room_version_rules::RedactionRules},
};
use ganglion_storage::Connect;
use ganglion_types::RoomNid;
use serde_json::{Map, Value, json};

use crate::{Caches, Result, StoredEvent};

/// An event in the client format of `/sync` (no `room_id`), serialised once: a response writes
/// it with [`SharedClientEvent::write`], adding only what differs per response and viewer
/// (`unsigned.age`, the sender's own `transaction_id`).
#[derive(Debug)]
pub struct SharedClientEvent {
    /// The event's JSON up to and including `"unsigned":{"age":`.
    head: Box<str>,
    /// The members of `unsigned` other than `age`, each preceded by a comma; empty for none.
    unsigned_rest: Box<str>,
    origin_server_ts: u64,
    /// [`Caches::redactions_generation`] when built: `prev_content` shows the replaced event as
    /// it was then, so an event that replaced another is rebuilt after any redaction.
    redactions_generation: u64,
    /// Built from the event redacted (a copy built before its redaction is not reused after).
    redacted: bool,
}

impl SharedClientEvent {
    /// Takes `value` (a client event with `unsigned.age`) apart.
    fn new(value: &mut Value, event: &StoredEvent, redactions_generation: u64) -> SharedClientEvent {
        let object = value.as_object_mut();
        let (mut unsigned, body) = match object {
            Some(object) => {
                object.remove("room_id");
                let unsigned = match object.remove("unsigned") {
                    Some(Value::Object(unsigned)) => unsigned,
                    _ => Map::new(),
                };
                (unsigned, Value::Object(std::mem::take(object)))
            }
            None => (Map::new(), json!({})),
        };
        unsigned.remove("age");
        let body = body.to_string();
        let mut head = String::with_capacity(body.len() + 20);
        head.push_str(&body[..body.len() - 1]);
        if body.len() > 2 {
            head.push(',');
        }
        head.push_str("\"unsigned\":{\"age\":");
        let rest = Value::Object(unsigned).to_string();
        let unsigned_rest =
            if rest.len() > 2 { format!(",{}", &rest[1..rest.len() - 1]) } else { String::new() };
        SharedClientEvent {
            head: head.into(),
            unsigned_rest: unsigned_rest.into(),
            origin_server_ts: u64::from(event.pdu.origin_server_ts.0),
            redactions_generation,
            redacted: event.row.redacted_by.is_some(),
        }
    }

    /// Appends the event's JSON as of `now_ms`, with `txn_id` as its `unsigned.transaction_id`
    /// and `relations` (a JSON object) as its `unsigned.m.relations`.
    pub fn write(&self, out: &mut Vec<u8>, now_ms: u64, txn_id: Option<&str>, relations: Option<&str>) {
        out.extend_from_slice(self.head.as_bytes());
        out.extend_from_slice(now_ms.saturating_sub(self.origin_server_ts).to_string().as_bytes());
        out.extend_from_slice(self.unsigned_rest.as_bytes());
        if let Some(relations) = relations {
            out.extend_from_slice(b",\"m.relations\":");
            out.extend_from_slice(relations.as_bytes());
        }
        if let Some(txn_id) = txn_id {
            out.extend_from_slice(b",\"transaction_id\":");
            // Writing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, txn_id);
        }
        out.extend_from_slice(b"}}");
    }
}

impl Caches {
    /// The version of a room (cached; versions never change).
    pub async fn room_version(
        &self,
        conn: &mut impl Connect,
        room_nid: RoomNid,
    ) -> Result<Option<RoomVersionId>> {
        if let Some(version) = self.room_versions.get(&room_nid) {
            return Ok(Some(version));
        }
        let Some(room) = ganglion_storage::rooms::room_by_nid(conn.connection().await?, room_nid).await?
        else {
            return Ok(None);
        };
        let version = RoomVersionId::try_from(room.room_version.as_str())
            .map_err(|e| crate::StateError::CorruptEvent(room.room_id.clone(), e.to_string()))?;
        self.room_versions.insert(room_nid, version.clone());
        Ok(Some(version))
    }

    async fn redaction_rules(&self, conn: &mut impl Connect, room_nid: RoomNid) -> Result<RedactionRules> {
        let version = self.room_version(conn, room_nid).await?.unwrap_or(RoomVersionId::V11);
        Ok(version.rules().map(|rules| rules.redaction).unwrap_or(RedactionRules::V11))
    }

    /// Client-format events. `viewer` (user id, device id) gets `unsigned.transaction_id` on
    /// the events it sent from that device.
    pub async fn client_events(
        &self,
        conn: &mut impl Connect,
        events: &[StoredEvent],
        viewer: Option<(&str, &str)>,
    ) -> Result<Vec<Value>> {
        let txn_ids = self.transaction_ids(conn, events, viewer).await?;
        let mut formatted = Vec::with_capacity(events.len());
        for event in events {
            let mut unsigned = self.unsigned_of(conn, event).await?;
            if let Some(txn_id) = txn_ids.get(&event.row.event_id) {
                unsigned.insert("transaction_id".into(), json!(txn_id));
            }
            formatted.push(self.client_event_with(conn, event, unsigned).await?);
        }
        Ok(formatted)
    }

    /// Events in the client format of `/sync` (without `room_id`), each serialised once and
    /// shared by every response that carries it (see [`SharedClientEvent`]).
    pub async fn shared_client_events(
        &self,
        conn: &mut impl Connect,
        events: &[StoredEvent],
    ) -> Result<Vec<Arc<SharedClientEvent>>> {
        let mut shared = Vec::with_capacity(events.len());
        for event in events {
            let generation = self.redactions_generation();
            if let Some(cached) = self.sync_events.get(&event.row.event_nid)
                && cached.redacted == event.row.redacted_by.is_some()
                && (event.row.replaces_nid.is_none() || cached.redactions_generation == generation)
            {
                shared.push(cached);
                continue;
            }
            let unsigned = self.unsigned_of(conn, event).await?;
            let mut value = self.client_event_with(conn, event, unsigned).await?;
            let built = Arc::new(SharedClientEvent::new(&mut value, event, generation));
            self.sync_events.insert(event.row.event_nid, built.clone());
            shared.push(built);
        }
        Ok(shared)
    }

    /// The transaction ids of the events `viewer` (user id, device id) sent from that device,
    /// by event id.
    pub async fn transaction_ids(
        &self,
        conn: &mut impl Connect,
        events: &[StoredEvent],
        viewer: Option<(&str, &str)>,
    ) -> Result<HashMap<String, String>> {
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
                    ganglion_storage::events::txn_ids_of_events(
                        conn.connection().await?,
                        user_id,
                        device_id,
                        &unknown,
                    )
                    .await?,
                );
            }
        }
        Ok(txn_ids)
    }

    /// `unsigned` of an event as every viewer sees it: what it replaced, for a state event
    /// (`age` and the viewer's `transaction_id` are added later).
    async fn unsigned_of(&self, conn: &mut impl Connect, event: &StoredEvent) -> Result<Map<String, Value>> {
        let mut unsigned = Map::new();
        if let Some(previous_nid) = event.row.replaces_nid
            && let Some(previous) = self.event(conn, previous_nid).await?
        {
            unsigned.insert("replaces_state".into(), json!(previous.row.event_id));
            unsigned.insert("prev_content".into(), self.visible_content(conn, &previous).await?);
            unsigned.insert("prev_sender".into(), json!(previous.row.sender));
        }
        Ok(unsigned)
    }

    /// The client format of `event` with `unsigned`, redacted if it was.
    async fn client_event_with(
        &self,
        conn: &mut impl Connect,
        event: &StoredEvent,
        unsigned: Map<String, Value>,
    ) -> Result<Value> {
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
        Ok(match redaction {
            Some((rules, because)) => client_event(&event.pdu, Some((&rules, because)), unsigned),
            None => client_event(&event.pdu, None, unsigned),
        })
    }

    /// The content clients see for an event: redacted if it was redacted.
    pub async fn visible_content(&self, conn: &mut impl Connect, event: &StoredEvent) -> Result<Value> {
        if event.row.redacted_by.is_some() {
            let rules = self.redaction_rules(conn, event.row.room_nid).await?;
            return Ok(ganglion_events::redacted_json(&event.pdu, &rules));
        }
        Ok(event.pdu.content_value())
    }
}
