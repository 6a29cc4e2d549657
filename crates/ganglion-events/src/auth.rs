//! The room version's authorization rules, through ruma's state-res crate.

use std::collections::HashMap;

use ruma::{
    OwnedEventId, UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::AuthorizationRules,
    state_res,
};
use serde_json::value::RawValue as RawJsonValue;

use crate::Pdu;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

/// The `(type, state_key)` pairs whose current state events are an event's `auth_events`.
pub fn auth_event_types(
    rules: &AuthorizationRules,
    kind: &str,
    sender: &UserId,
    state_key: Option<&str>,
    content: &RawJsonValue,
) -> Result<Vec<(StateEventType, String)>, AuthError> {
    state_res::auth_types_for_event(&TimelineEventType::from(kind), sender, state_key, content, rules)
        .map_err(AuthError)
}

/// Checks `pdu` against the auth rules: the state-independent rules with its `auth_events`
/// (`events_by_id` must hold them, and in v12 the create event), then the state-dependent rules
/// against the state before it (`state`).
pub fn check_auth<'a>(
    rules: &AuthorizationRules,
    pdu: &Pdu,
    events_by_id: &HashMap<OwnedEventId, &'a Pdu>,
    state: impl Fn(&StateEventType, &str) -> Option<&'a Pdu>,
) -> Result<(), AuthError> {
    state_res::check_state_independent_auth_rules(rules, pdu, |id| events_by_id.get(id).copied())
        .map_err(AuthError)?;
    state_res::check_state_dependent_auth_rules(rules, pdu, state).map_err(AuthError)
}
