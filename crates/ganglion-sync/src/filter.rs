//! The sync filter (`POST /user/{userId}/filter` bodies, or inline JSON in `?filter=`): which
//! rooms, events and sections a `/sync` response carries. Parsing and matching only; no IO.

use ganglion_http::MatrixError;
use serde::Deserialize;

/// Events a timeline holds when the filter does not say.
pub const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// Most events a timeline may hold, whatever the filter asks.
pub const MAX_TIMELINE_LIMIT: usize = 1000;

/// A whole sync filter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Filter {
    pub room: RoomFilter,
    pub account_data: EventFilter,
    pub presence: EventFilter,
    pub event_fields: Option<Vec<String>>,
    pub event_format: EventFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    #[default]
    Client,
    Federation,
}

/// What the filter says about rooms.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RoomFilter {
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub include_leave: bool,
    pub timeline: RoomEventFilter,
    pub state: RoomEventFilter,
    pub ephemeral: RoomEventFilter,
    pub account_data: RoomEventFilter,
}

/// A filter on non-room events (global account data, presence).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EventFilter {
    pub limit: Option<u64>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
}

impl Filter {
    /// Parses filter JSON: text that is not JSON is `M_INVALID_PARAM`; JSON of the wrong shape
    /// (a filter that is not an object, a string where a list belongs, a negative limit) is
    /// `M_BAD_JSON`.
    pub fn parse(text: &str) -> Result<Filter, MatrixError> {
        let mut value: serde_json::Value = serde_json::from_str(text)
            .map_err(|error| MatrixError::invalid_param(format!("Filter is not valid JSON: {error}")))?;
        remove_nulls(&mut value);
        for (path, section) in sections(&value) {
            if !section.is_object() {
                return Err(MatrixError::bad_json(format!("Filter field `{path}` must be a JSON object")));
            }
        }
        serde_json::from_value(value)
            .map_err(|error| MatrixError::bad_json(format!("Invalid filter: {error}")))
    }

    /// Whether `room_id` may appear in the response at all.
    pub fn allows_room(&self, room_id: &str) -> bool {
        allows_room(&self.room.rooms, &self.room.not_rooms, room_id)
    }

    /// How many events a room's timeline holds at most.
    pub fn timeline_limit(&self) -> usize {
        self.room
            .timeline
            .limit
            .map_or(DEFAULT_TIMELINE_LIMIT, |limit| usize::try_from(limit).unwrap_or(MAX_TIMELINE_LIMIT))
            .min(MAX_TIMELINE_LIMIT)
    }
}

impl EventFilter {
    pub fn allows(&self, kind: &str, sender: Option<&str>) -> bool {
        allows_type(&self.types, &self.not_types, kind)
            && allows_sender(&self.senders, &self.not_senders, sender)
    }
}

/// A `null` field means the same as an absent one (the filter API stores what clients send).
fn remove_nulls(value: &mut serde_json::Value) {
    if let serde_json::Value::Object(object) = value {
        object.retain(|_, field| !field.is_null());
        object.values_mut().for_each(remove_nulls);
    }
}

/// The filter and its sections that must be JSON objects (serde would also accept a list for a
/// struct), with their paths; absent sections are left out.
fn sections(filter: &serde_json::Value) -> Vec<(&'static str, &serde_json::Value)> {
    let mut sections = vec![("filter", filter)];
    for (path, key) in [("room", "room"), ("account_data", "account_data"), ("presence", "presence")] {
        sections.extend(filter.get(key).map(|section| (path, section)));
    }
    if let Some(room) = filter.get("room") {
        for (path, key) in [
            ("room.timeline", "timeline"),
            ("room.state", "state"),
            ("room.ephemeral", "ephemeral"),
            ("room.account_data", "account_data"),
        ] {
            sections.extend(room.get(key).map(|section| (path, section)));
        }
    }
    sections
}

pub use ganglion_events::filter::{RoomEventFilter, type_matches};
use ganglion_events::filter::{allows_room, allows_sender, allows_type};
