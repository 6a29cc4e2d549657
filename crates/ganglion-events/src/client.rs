//! The client-server API's event format, derived from a PDU.

use ruma::{CanonicalJsonObject, room_version_rules::RedactionRules};
use serde_json::{Map, Value, json};

use crate::Pdu;

/// The content a redacted event keeps under the room version's redaction rules.
pub fn redacted_json(pdu: &Pdu, rules: &RedactionRules) -> Value {
    let Ok(object) = serde_json::from_str::<CanonicalJsonObject>(&pdu.json) else {
        return json!({});
    };
    match ruma::canonical_json::redact(object, rules, None) {
        Ok(redacted) => redacted
            .get("content")
            .map(|content| serde_json::to_value(content).unwrap_or(Value::Null))
            .unwrap_or_else(|| json!({})),
        Err(_) => json!({}),
    }
}

/// The client format of `pdu`. When `redacted_because` is given (the redaction event in client
/// format), the content is stripped per `rules` and the redaction is attached in `unsigned`.
pub fn client_event(
    pdu: &Pdu,
    redaction: Option<(&RedactionRules, Value)>,
    mut unsigned: Map<String, Value>,
) -> Value {
    let content = match &redaction {
        Some((rules, _)) => redacted_json(pdu, rules),
        None => serde_json::from_str(pdu.content.get()).unwrap_or_else(|_| json!({})),
    };
    let mut event = Map::with_capacity(9);
    event.insert("content".into(), content);
    event.insert("event_id".into(), Value::String(pdu.event_id.to_string()));
    event.insert("origin_server_ts".into(), json!(pdu.origin_server_ts.0));
    event.insert("room_id".into(), Value::String(pdu.room_id.to_string()));
    event.insert("sender".into(), Value::String(pdu.sender.to_string()));
    event.insert("type".into(), Value::String(pdu.kind.to_string()));
    if let Some(state_key) = &pdu.state_key {
        event.insert("state_key".into(), Value::String(state_key.clone()));
    }
    if let Some(redacts) = pdu.redacts.as_ref().filter(|_| redaction.is_none()) {
        event.insert("redacts".into(), Value::String(redacts.to_string()));
    }
    if let Some((_, redacted_because)) = redaction {
        unsigned.insert("redacted_because".into(), redacted_because);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0);
    let age = now.saturating_sub(u64::from(pdu.origin_server_ts.0));
    unsigned.insert("age".into(), json!(age));
    event.insert("unsigned".into(), Value::Object(unsigned));
    Value::Object(event)
}
