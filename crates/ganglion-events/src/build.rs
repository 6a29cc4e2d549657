//! Building a new PDU for a room version: content hash, signature, reference-hash event id.
//! Also the spec's size limits, checked cheaply on a template before anything is written and
//! exactly on the built event.

use std::sync::Arc;

use ganglion_types::{ErrorClass, HasErrorClass};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId, ServerName, UserId, int,
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
};

use crate::{Pdu, ServerKey};

/// The largest PDU, in bytes of canonical JSON with hashes and signatures. The spec allows
/// 65,536, but ruma's content hash refuses anything over 65,535, so that is the limit enforced
/// (and named in the error).
pub const MAX_PDU_BYTES: usize = 65_535;

/// The longest event `type` and `state_key`, in bytes (the spec's size limits; `room_id`,
/// `sender` and `event_id` are held to the same by ruma's identifier parsing).
pub const MAX_EVENT_FIELD_BYTES: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("event content must be a JSON object")]
    ContentNotObject,
    #[error("event content is not canonical JSON: {0}")]
    NotCanonical(String),
    #[error("the event would be larger than the maximum of {MAX_PDU_BYTES} bytes")]
    TooLarge,
    #[error("the event's `{0}` is longer than the maximum of {MAX_EVENT_FIELD_BYTES} bytes")]
    FieldTooLong(&'static str),
    #[error("signing failed: {0}")]
    Signing(String),
}

impl HasErrorClass for BuildError {
    fn class(&self) -> ErrorClass {
        match self {
            BuildError::TooLarge => ErrorClass::TooLarge,
            BuildError::ContentNotObject | BuildError::NotCanonical(_) | BuildError::FieldTooLong(_) => {
                ErrorClass::BadJson
            }
            BuildError::Signing(_) => ErrorClass::Internal,
        }
    }
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
    // Room versions 1 and 2 name events by an id their server picks, carried in the event, and
    // list references as `[id, hashes]` pairs (the hashes unused, so left empty as Synapse does).
    let own_id = rules.event_id_format == EventIdFormatVersion::V1;
    let ids = |ids: &[OwnedEventId]| {
        CanonicalJsonValue::Array(
            ids.iter()
                .map(|id| {
                    let id = CanonicalJsonValue::String(id.to_string());
                    if own_id {
                        CanonicalJsonValue::Array(vec![id, CanonicalJsonValue::Object(Default::default())])
                    } else {
                        id
                    }
                })
                .collect(),
        )
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

    let own_event_id = if own_id {
        let server = ServerName::parse(&key.server_name).map_err(|e| BuildError::Signing(e.to_string()))?;
        let event_id = EventId::new_v1(&server);
        object.insert("event_id".into(), CanonicalJsonValue::String(event_id.to_string()));
        object.insert("origin".into(), CanonicalJsonValue::String(key.server_name.clone()));
        Some(event_id)
    } else {
        None
    };

    ruma::signatures::hash_and_sign_event(&key.server_name, &key.key_pair, &mut object, &rules.redaction)
        .map_err(signing_error)?;
    let event_id = match own_event_id {
        Some(event_id) => event_id,
        None => {
            let hash = ruma::signatures::reference_hash(&object, rules).map_err(signing_error)?;
            EventId::parse(format!("${hash}")).map_err(|e| BuildError::Signing(e.to_string()))?
        }
    };
    let json = CanonicalJsonValue::Object(object).to_string();
    if json.len() > MAX_PDU_BYTES {
        return Err(BuildError::TooLarge);
    }
    Pdu::from_json(event_id, Arc::from(json)).map_err(|e| BuildError::Signing(e.to_string()))
}

/// ruma's hashing refuses an oversized event: that is the client's doing, not a signing failure.
fn signing_error(error: ruma::signatures::JsonError) -> BuildError {
    match error {
        ruma::signatures::JsonError::PduTooLarge => BuildError::TooLarge,
        other => BuildError::Signing(other.to_string()),
    }
}

/// Checks a template against the spec's size limits before the event is built, so a request
/// that cannot succeed is refused before the writer starts a batch. An event too large whatever
/// the room adds to it is `TooLarge`, checked first: it is the bigger fault (a 100 KB event type
/// is too large before it is too long). Then `type` and `state_key` over 255 bytes. The exact
/// size is only known once the room's auth and prev events are in: `build_pdu` checks it again.
pub fn check_template(
    template: &EventTemplate,
    room_id: Option<&RoomId>,
    sender: &UserId,
) -> Result<(), BuildError> {
    check_template_size(template, room_id, sender)?;
    check_template_fields(template)
}

/// `TooLarge` when even the smallest PDU built from the template would be over the limit.
pub fn check_template_size(
    template: &EventTemplate,
    room_id: Option<&RoomId>,
    sender: &UserId,
) -> Result<(), BuildError> {
    if minimum_pdu_bytes(template, room_id, sender) > MAX_PDU_BYTES {
        return Err(BuildError::TooLarge);
    }
    Ok(())
}

/// `FieldTooLong` for a `type` or `state_key` over 255 bytes.
pub fn check_template_fields(template: &EventTemplate) -> Result<(), BuildError> {
    if template.kind.len() > MAX_EVENT_FIELD_BYTES {
        return Err(BuildError::FieldTooLong("type"));
    }
    if template.state_key.as_ref().is_some_and(|key| key.len() > MAX_EVENT_FIELD_BYTES) {
        return Err(BuildError::FieldTooLong("state_key"));
    }
    Ok(())
}

/// Bytes of canonical JSON that every PDU built from `template` has at least: the template's
/// fields, `room_id` and `sender` as `build_pdu` writes them, plus the fields every event
/// carries at their smallest (no auth or prev events, one-digit depth and timestamp, a content
/// hash, and one signature from a one-letter server with an empty key id). Never more than the
/// built event's size, so the check refuses only what `build_pdu` would refuse too.
pub fn minimum_pdu_bytes(template: &EventTemplate, room_id: Option<&RoomId>, sender: &UserId) -> usize {
    #[derive(serde::Serialize)]
    struct Fields<'a> {
        content: &'a serde_json::Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        redacts: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        room_id: Option<&'a str>,
        sender: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        state_key: Option<&'a str>,
        #[serde(rename = "type")]
        kind: &'a str,
    }
    /// The rest of the smallest PDU: 43 base64 bytes of SHA-256, 86 of an ed25519 signature.
    const FIXED_FIELDS: &str = concat!(
        r#","auth_events":[],"depth":1,"hashes":{"sha256":"0000000000000000000000000000000000000000000"}"#,
        r#","origin_server_ts":0,"prev_events":[],"signatures":{"a":{"ed25519:":""#,
        "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        r#""}}"#,
    );
    let fields = Fields {
        content: &template.content,
        redacts: template.redacts.as_ref().map(|id| id.as_str()),
        room_id: room_id.map(RoomId::as_str),
        sender: sender.as_str(),
        state_key: template.state_key.as_deref(),
        kind: &template.kind,
    };
    let mut counter = ByteCounter(0);
    // Writing to a counter cannot fail, and any `Value` serializes.
    let _ = serde_json::to_writer(&mut counter, &fields);
    counter.0 + FIXED_FIELDS.len()
}

struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
