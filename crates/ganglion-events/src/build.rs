//! Building a new PDU for a room version: content hash, signature, reference-hash event id.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId, UserId, int,
    room_version_rules::RoomVersionRules,
};

use crate::{Pdu, ServerKey};

/// The largest PDU the spec allows, in bytes of canonical JSON.
pub const MAX_PDU_BYTES: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("event content must be a JSON object")]
    ContentNotObject,
    #[error("event content is not canonical JSON: {0}")]
    NotCanonical(String),
    #[error("event is larger than {MAX_PDU_BYTES} bytes")]
    TooLarge,
    #[error("signing failed: {0}")]
    Signing(String),
}

/// What a client (or the server itself) asks to send; the builder adds the rest.
#[derive(Debug, Clone)]
pub struct EventTemplate {
    pub kind: String,
    pub content: serde_json::Value,
    pub state_key: Option<String>,
    pub redacts: Option<OwnedEventId>,
}

impl EventTemplate {
    pub fn state(
        kind: impl Into<String>,
        state_key: impl Into<String>,
        content: serde_json::Value,
    ) -> EventTemplate {
        EventTemplate { kind: kind.into(), content, state_key: Some(state_key.into()), redacts: None }
    }

    pub fn message(kind: impl Into<String>, content: serde_json::Value) -> EventTemplate {
        EventTemplate { kind: kind.into(), content, state_key: None, redacts: None }
    }
}

/// Builds, hashes and signs a PDU. `room_id` is `None` only for a room v12 create event, whose
/// event id becomes the room id.
#[allow(clippy::too_many_arguments)]
pub fn build_pdu(
    key: &ServerKey,
    rules: &RoomVersionRules,
    room_id: Option<&RoomId>,
    sender: &UserId,
    template: &EventTemplate,
    prev_events: &[OwnedEventId],
    auth_events: &[OwnedEventId],
    depth: u64,
    origin_server_ts: u64,
) -> Result<Pdu, BuildError> {
    let CanonicalJsonValue::Object(mut content) = CanonicalJsonValue::try_from(template.content.clone())
        .map_err(|e| BuildError::NotCanonical(e.to_string()))?
    else {
        return Err(BuildError::ContentNotObject);
    };
    let mut object = CanonicalJsonObject::new();
    if let Some(redacts) = &template.redacts {
        if rules.redaction.content_field_redacts {
            content.insert("redacts".into(), CanonicalJsonValue::String(redacts.to_string()));
        } else {
            object.insert("redacts".into(), CanonicalJsonValue::String(redacts.to_string()));
        }
    }
    let ids = |ids: &[OwnedEventId]| {
        CanonicalJsonValue::Array(ids.iter().map(|id| CanonicalJsonValue::String(id.to_string())).collect())
    };
    object.insert("auth_events".into(), ids(auth_events));
    object.insert("prev_events".into(), ids(prev_events));
    object.insert("content".into(), CanonicalJsonValue::Object(content));
    let depth = ruma::Int::try_from(depth).unwrap_or(ruma::Int::MAX);
    object.insert("depth".into(), CanonicalJsonValue::Integer(depth));
    let ts = ruma::Int::try_from(origin_server_ts).unwrap_or(int!(0));
    object.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(ts));
    if let Some(room_id) = room_id {
        object.insert("room_id".into(), CanonicalJsonValue::String(room_id.to_string()));
    }
    object.insert("sender".into(), CanonicalJsonValue::String(sender.to_string()));
    object.insert("type".into(), CanonicalJsonValue::String(template.kind.clone()));
    if let Some(state_key) = &template.state_key {
        object.insert("state_key".into(), CanonicalJsonValue::String(state_key.clone()));
    }

    ruma::signatures::hash_and_sign_event(&key.server_name, &key.key_pair, &mut object, &rules.redaction)
        .map_err(|e| BuildError::Signing(e.to_string()))?;
    let hash = ruma::signatures::reference_hash(&object, rules).map_err(|e| match e {
        ruma::signatures::JsonError::PduTooLarge => BuildError::TooLarge,
        other => BuildError::Signing(other.to_string()),
    })?;
    let event_id = EventId::parse(format!("${hash}")).map_err(|e| BuildError::Signing(e.to_string()))?;
    let json = CanonicalJsonValue::Object(object).to_string();
    if json.len() > MAX_PDU_BYTES {
        return Err(BuildError::TooLarge);
    }
    Pdu::from_json(event_id, Arc::from(json)).map_err(|e| BuildError::Signing(e.to_string()))
}
