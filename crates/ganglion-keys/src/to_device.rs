//! To-device messages, `PUT /sendToDevice/{eventType}/{txnId}`.
//!
//! The request as a whole is bounded by the HTTP body limit (`http.max_body_bytes`). Each message
//! is bounded as Synapse bounds it (element-hq/synapse#19617) and MSC4514 proposes: it must fit,
//! alone, in one
//! `m.direct_to_device` EDU of at most 64 KiB of canonical JSON, so it can always be sent over
//! federation; a larger one could never be delivered to a remote device.

use ruma::{OwnedUserId, UserId, to_device::DeviceIdOrAllDevices};
use serde_json::{Value, json};

use crate::{KeyError, json::canonical_object};

/// The largest `m.direct_to_device` EDU, in bytes of canonical JSON (Synapse's `MAX_EDU_SIZE`,
/// the same as the spec's PDU limit).
pub const MAX_TO_DEVICE_EDU_BYTES: usize = 65_536;

/// The longest event type, as the spec bounds a PDU's `type`.
pub const MAX_EVENT_TYPE_BYTES: usize = 255;

/// The `message_id` length an EDU is measured with. Synapse uses 16 random characters; measuring
/// with twice that leaves our federation sender free to choose any id up to 32 bytes.
const EDU_MESSAGE_ID_BYTES: usize = 32;

/// One message of a `/sendToDevice` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToDeviceMessage {
    pub user_id: OwnedUserId,
    /// One device, or `*` for all of the user's devices.
    pub device: DeviceIdOrAllDevices,
    /// The content object, as canonical JSON.
    pub content: String,
}

/// Checks a `/sendToDevice` request from `sender`: the event type, and a body of `{"messages":
/// {user_id: {device_id or "*": content object}}}` whose every message fits alone in an EDU.
/// An invalid user id is refused (Synapse skips it silently), so a client bug shows.
pub fn check_to_device_messages(
    sender: &UserId,
    event_type: &str,
    body: &Value,
) -> Result<Vec<ToDeviceMessage>, KeyError> {
    if event_type.is_empty() || event_type.len() > MAX_EVENT_TYPE_BYTES {
        return Err(KeyError::invalid("eventType", format!("must be 1 to {MAX_EVENT_TYPE_BYTES} bytes")));
    }
    let body = canonical_object(body, "body")?;
    let Some(messages) = body.get("messages") else {
        return Err(KeyError::malformed("messages", "is required"));
    };
    let messages =
        messages.as_object().ok_or_else(|| KeyError::malformed("messages", "must be an object"))?;
    let mut checked = Vec::new();
    for (user_id, by_device) in messages {
        let what = format!("messages.{user_id}");
        let user_id = UserId::parse(user_id).map_err(|_| KeyError::invalid(&what, "is not a user id"))?;
        let by_device =
            by_device.as_object().ok_or_else(|| KeyError::malformed(&what, "must be an object"))?;
        for (device, content) in by_device {
            let what = format!("{what}.{device}");
            let device = DeviceIdOrAllDevices::try_from(device.as_str())
                .map_err(|_| KeyError::invalid(&what, "is not a device id or `*`"))?;
            if content.as_object().is_none() {
                return Err(KeyError::malformed(&what, "must be an object"));
            }
            let content = content.to_string();
            let bytes = edu_bytes(sender, event_type, &user_id, &device, &content);
            if bytes > MAX_TO_DEVICE_EDU_BYTES {
                return Err(KeyError::TooLarge { what, bytes, max: MAX_TO_DEVICE_EDU_BYTES });
            }
            checked.push(ToDeviceMessage { user_id: user_id.clone(), device, content });
        }
    }
    Ok(checked)
}

/// The size of the EDU that carries this one message. Canonical JSON is compositional, so it is
/// the envelope around an empty `{}` content, plus the content, minus those two bytes. Compact
/// serde_json output has the canonical length whatever its key order.
fn edu_bytes(
    sender: &UserId,
    event_type: &str,
    user_id: &UserId,
    device: &DeviceIdOrAllDevices,
    content: &str,
) -> usize {
    let envelope = json!({
        "content": {
            "message_id": "x".repeat(EDU_MESSAGE_ID_BYTES),
            "messages": { user_id.as_str(): { device.to_string(): {} } },
            "sender": sender,
            "type": event_type,
        },
        "edu_type": "m.direct_to_device",
    });
    envelope.to_string().len() - "{}".len() + content.len()
}
