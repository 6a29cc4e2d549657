//! Power levels, for the checks the client API adds on top of the auth rules (who may redact
//! another user's event, publish a room, delete an alias).

use ganglion_events::{Pdu, ruma::room_version_rules::AuthorizationRules};
use serde_json::Value;

fn int(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.parse().ok(),
        _ => None,
    }
}

/// A user's power in a room: infinite for creators from room version 12 on.
pub(crate) fn user_power(
    rules: &AuthorizationRules,
    create: &Pdu,
    power_levels: Option<&Pdu>,
    user_id: &str,
) -> i64 {
    if rules.explicitly_privilege_room_creators {
        let content = create.content_value();
        let additional = content.get("additional_creators").and_then(Value::as_array);
        if create.sender.as_str() == user_id
            || additional.is_some_and(|creators| creators.iter().any(|c| c.as_str() == Some(user_id)))
        {
            return i64::MAX;
        }
    }
    match power_levels {
        Some(power_levels) => {
            let content = power_levels.content_value();
            int(content.get("users").and_then(|users| users.get(user_id)))
                .or_else(|| int(content.get("users_default")))
                .unwrap_or(0)
        }
        None if create.sender.as_str() == user_id => 100,
        None => 0,
    }
}

/// The level a power-levels key (`redact`, `state_default`, …) requires.
pub(crate) fn required_power(power_levels: Option<&Pdu>, key: &str, default: i64) -> i64 {
    power_levels.and_then(|power_levels| int(power_levels.content_value().get(key))).unwrap_or(default)
}
