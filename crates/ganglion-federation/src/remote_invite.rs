//! Inviting another server's user: the invitee's server countersigns our invite event
//! (`PUT /_matrix/federation/v2/invite`) before the room has it.

use ruma::{CanonicalJsonValue, RoomId, RoomVersionId, UserId, signatures::PublicKeyMap};
use serde_json::{Value, json};

use crate::{
    Federation, FederationError,
    client::encode,
    pdu::{CheckedPdu, check_pdu},
};

/// Sends our invite `event` (canonical JSON, signed by us) of `target` to its server; answers
/// the event countersigned by that server, both signatures checked.
pub async fn invite_remote(
    federation: &Federation,
    room_id: &RoomId,
    room_version: &RoomVersionId,
    (event_id, event): (&str, &str),
    invite_room_state: &Value,
    target: &UserId,
) -> Result<CheckedPdu, FederationError> {
    let server = target.server_name();
    let bad = |message: String| FederationError::BadResponse { destination: server.to_string(), message };
    let event: Value = serde_json::from_str(event).map_err(|e| bad(e.to_string()))?;
    let body =
        json!({ "room_version": room_version, "event": event, "invite_room_state": invite_room_state });
    let path = format!("/_matrix/federation/v2/invite/{}/{}", encode(room_id.as_str()), encode(event_id));
    let answer = federation.client.request(http::Method::PUT, server, &path, Some(&body)).await?;
    let signed = check_pdu(&federation.keyring, room_version, &answer["event"])
        .await
        .map_err(|error| bad(format!("the countersigned invite is unusable: {error}")))?;
    if signed.event_id.as_str() != event_id {
        return Err(bad("the invite came back changed".into()));
    }
    let rules = room_version
        .rules()
        .ok_or_else(|| FederationError::UnsupportedRoomVersion(room_version.to_string()))?;
    // The invitee's server's own signature, over the redacted event as every event signature.
    let mut redacted = ruma::canonical_json::redact(signed.object.clone(), &rules.redaction, None)
        .map_err(|e| bad(e.to_string()))?;
    let key_ids: Vec<String> = match redacted.get_mut("signatures") {
        Some(CanonicalJsonValue::Object(signatures)) => {
            signatures.retain(|entity, _| entity == server.as_str());
            match signatures.get(server.as_str()) {
                Some(CanonicalJsonValue::Object(by_key)) => by_key.keys().cloned().collect(),
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    };
    let at_ms = match redacted.get("origin_server_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
        _ => 0,
    };
    let mut keys = std::collections::BTreeMap::new();
    for key_id in key_ids {
        if let Ok(key) = federation.keyring.verify_key(server, &key_id, at_ms).await {
            keys.insert(key_id, key);
        }
    }
    if keys.is_empty() {
        return Err(bad("the invite came back without a signature of the invitee's server".into()));
    }
    let map: PublicKeyMap = std::collections::BTreeMap::from([(server.to_string(), keys)]);
    ruma::signatures::verify_json(&map, &redacted)
        .map_err(|error| bad(format!("the invitee's server's signature does not verify: {error}")))?;
    Ok(signed)
}
