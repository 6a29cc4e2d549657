//! Matrix events as PDUs: building a new event for a room version (content hash, signature,
//! reference-hash event id), parsing stored canonical JSON back, the room version's auth rules
//! through ruma's state-res crate, redaction, and the client-facing event format.
//!
//! Pure functions over JSON and keys: no database, no network.

mod auth;
mod build;
mod client;
pub mod filter;
pub mod ignored_users;
mod key;
mod pdu;
pub mod presence;
pub mod push_rules;
mod resolve;

pub use auth::{AuthError, auth_event_types, check_auth};
pub use build::{
    BuildError, EventTemplate, MAX_EVENT_FIELD_BYTES, MAX_PDU_BYTES, build_pdu, check_template,
    check_template_fields, check_template_size, minimum_pdu_bytes,
};
pub use client::{client_event, redacted_json};
pub use key::{KeyError, RetiredKey, ServerKey, retired_path};
pub use pdu::{Pdu, PduError, Relation, canonical_event_ref_id, event_ref_id};
pub use resolve::{ResolveError, auth_chain, resolve_state};
pub use ruma;

use ruma::{RoomVersionId, room_version_rules::RoomVersionRules};

/// Event types that move a room up a client's room list (its bump stamp), as Synapse and
/// Element X count them: what a user reads as new activity, not state changes or reactions.
pub const BUMP_EVENT_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];

/// The state events (state key `""`) shown to a user invited to, or knocking on, a room they are
/// not in: the spec's recommended stripped state.
pub const STRIPPED_STATE_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

/// Room versions this server creates and joins: 2 and on. Version 1 resolves state with the
/// first algorithm, which ruma does not implement. 12 is the default, as the spec recommends.
pub const SUPPORTED_ROOM_VERSIONS: [RoomVersionId; 11] = [
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

/// The rules of a supported room version, or `None` for one we do not support.
pub fn rules_for(version: &RoomVersionId) -> Option<RoomVersionRules> {
    if SUPPORTED_ROOM_VERSIONS.contains(version) { version.rules() } else { None }
}

#[cfg(test)]
mod tests;
