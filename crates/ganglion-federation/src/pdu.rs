//! Checks of another server's PDU that need no room state: its format and size, its id (the
//! reference hash), the signatures of the servers the room version requires (keys from the key
//! ring, valid when the event was made) and its content hash. An event whose hash does not match
//! its content is kept redacted, as the spec says. The master then authorises it.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId,
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
    signatures::{PublicKeyMap, Verified},
};
use serde_json::Value;

use crate::KeyRing;

/// Why a PDU was refused before its auth checks.
#[derive(Debug, thiserror::Error)]
pub enum PduCheckError {
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error("the event is larger than {max} bytes", max = ganglion_events::MAX_PDU_BYTES)]
    TooLarge,
    #[error("the signature of {server} cannot be checked: {reason}")]
    MissingKey { server: String, reason: String },
    #[error("bad signature: {0}")]
    BadSignature(String),
}

impl ganglion_types::HasErrorClass for PduCheckError {
    fn class(&self) -> ganglion_types::ErrorClass {
        use ganglion_types::ErrorClass;
        match self {
            PduCheckError::Malformed(_) => ErrorClass::BadJson,
            PduCheckError::TooLarge => ErrorClass::TooLarge,
            PduCheckError::MissingKey { .. } | PduCheckError::BadSignature(_) => ErrorClass::Forbidden,
        }
    }
}

/// A PDU whose format, id, signatures and hash were checked.
#[derive(Debug, Clone)]
pub struct CheckedPdu {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    /// Canonical JSON as hashed and signed: no `unsigned`, no `event_id` (except in room
    /// versions 1 and 2, whose events carry it); redacted when its content did not match its hash.
    pub json: String,
    pub object: CanonicalJsonObject,
    pub redacted: bool,
}

impl CheckedPdu {
    /// The event ids the PDU lists in `field` (`prev_events` or `auth_events`), in either form.
    pub fn referenced(&self, field: &str) -> Vec<String> {
        match self.object.get(field) {
            Some(CanonicalJsonValue::Array(entries)) => entries
                .iter()
                .filter_map(|entry| ganglion_events::canonical_event_ref_id(entry).map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The event id a PDU has in a room of `rules`: its reference hash, or in room versions 1 and 2
/// the `event_id` it carries.
pub fn event_id_of(
    object: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<OwnedEventId, PduCheckError> {
    if rules.event_id_format == EventIdFormatVersion::V1 {
        return match object.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => EventId::parse(id.as_str())
                .ok()
                .filter(|id| id.server_name().is_some())
                .ok_or_else(|| PduCheckError::Malformed(format!("event_id {id:?} is not an event id"))),
            _ => Err(PduCheckError::Malformed("event_id is missing".into())),
        };
    }
    let hash = ruma::signatures::reference_hash(object, rules).map_err(|error| match error {
        ruma::signatures::JsonError::PduTooLarge => PduCheckError::TooLarge,
        other => PduCheckError::Malformed(other.to_string()),
    })?;
    EventId::parse(format!("${hash}")).map_err(|e| PduCheckError::Malformed(e.to_string()))
}

/// Checks `pdu` as a PDU of a room of `version`.
pub async fn check_pdu(
    keyring: &KeyRing,
    version: &RoomVersionId,
    pdu: &Value,
) -> Result<CheckedPdu, PduCheckError> {
    let rules = ganglion_events::rules_for(version)
        .ok_or_else(|| PduCheckError::Malformed(format!("room version {version} is not supported")))?;
    let Ok(CanonicalJsonValue::Object(mut object)) = CanonicalJsonValue::try_from(pdu.clone()) else {
        return Err(PduCheckError::Malformed("not a canonical JSON object".into()));
    };
    // Not covered by the signatures; nor is `event_id` where it is the reference hash (it is
    // part of the event in room versions 1 and 2).
    if rules.event_id_format != EventIdFormatVersion::V1 {
        object.remove("event_id");
    }
    object.remove("unsigned");
    let event_id = event_id_of(&object, &rules)?;
    let is_create =
        matches!(object.get("type"), Some(CanonicalJsonValue::String(kind)) if kind == "m.room.create");
    let room_id = match object.get("room_id") {
        Some(CanonicalJsonValue::String(room_id)) => {
            RoomId::parse(room_id.as_str()).map_err(|e| PduCheckError::Malformed(format!("room_id: {e}")))?
        }
        // Where the create event's id names the room, the create event carries no room id.
        None if is_create && rules.authorization.room_create_event_id_as_room_id => {
            RoomId::parse(format!("!{}", &event_id.as_str()[1..]))
                .map_err(|e| PduCheckError::Malformed(format!("room_id: {e}")))?
        }
        _ => return Err(PduCheckError::Malformed("room_id is missing".into())),
    };
    let at_ms = match object.get("origin_server_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
        _ => return Err(PduCheckError::Malformed("origin_server_ts is missing".into())),
    };
    let servers = ruma::signatures::required_server_signatures_to_verify_event(&object, &rules.signatures)
        .map_err(|e| PduCheckError::Malformed(e.to_string()))?;
    let mut keys = PublicKeyMap::new();
    for server in servers {
        let key_ids: Vec<String> = match object.get("signatures") {
            Some(CanonicalJsonValue::Object(signatures)) => match signatures.get(server.as_str()) {
                Some(CanonicalJsonValue::Object(by_key)) => by_key.keys().cloned().collect(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        let mut found = std::collections::BTreeMap::new();
        let mut last_failure = format!("the event carries no signature of {server}");
        for key_id in key_ids {
            match keyring.verify_key(&server, &key_id, at_ms).await {
                Ok(key) => {
                    found.insert(key_id, key);
                }
                Err(error) => last_failure = error.to_string(),
            }
        }
        if found.is_empty() {
            return Err(PduCheckError::MissingKey { server: server.to_string(), reason: last_failure });
        }
        keys.insert(server.to_string(), found);
    }
    let redacted = match ruma::signatures::verify_event(&keys, &object, &rules) {
        Ok(Verified::All) => false,
        Ok(Verified::Signatures) => {
            object = ruma::canonical_json::redact(object, &rules.redaction, None)
                .map_err(|e| PduCheckError::Malformed(e.to_string()))?;
            true
        }
        Err(error) => return Err(PduCheckError::BadSignature(error.to_string())),
    };
    let json = CanonicalJsonValue::Object(object.clone()).to_string();
    if json.len() > ganglion_events::MAX_PDU_BYTES {
        return Err(PduCheckError::TooLarge);
    }
    Ok(CheckedPdu { event_id, room_id, json, object, redacted })
}
