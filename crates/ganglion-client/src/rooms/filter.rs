//! The `RoomEventFilter` of `/messages`: which events of a page the client wants.

use ganglion_http::{MatrixError, MatrixResult};
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RoomEventFilter {
    pub limit: Option<u64>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub contains_url: Option<bool>,
    pub lazy_load_members: bool,
}

impl RoomEventFilter {
    /// Parses the `filter` query parameter (a JSON object).
    pub(crate) fn parse(text: &str) -> MatrixResult<RoomEventFilter> {
        serde_json::from_str(text)
            .map_err(|error| MatrixError::invalid_param(format!("Invalid filter: {error}")))
    }

    pub(crate) fn allows_room(&self, room_id: &str) -> bool {
        !self.not_rooms.iter().any(|room| room == room_id)
            && self.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|room| room == room_id))
    }

    /// Whether an event of type `kind` from `sender` passes; `has_url` says whether its content
    /// has a `url` key. The `not_` lists win over the allow lists.
    pub(crate) fn allows_event(&self, kind: &str, sender: &str, has_url: bool) -> bool {
        if self.not_types.iter().any(|pattern| type_matches(pattern, kind))
            || self.not_senders.iter().any(|excluded| excluded == sender)
        {
            return false;
        }
        self.types.as_ref().is_none_or(|types| types.iter().any(|pattern| type_matches(pattern, kind)))
            && self.senders.as_ref().is_none_or(|senders| senders.iter().any(|allowed| allowed == sender))
            && self.contains_url.is_none_or(|wanted| wanted == has_url)
    }

    /// Whether matching needs each event's content (only for `contains_url`).
    pub(crate) fn needs_content(&self) -> bool {
        self.contains_url.is_some()
    }
}

pub(crate) use ganglion_events::filter::type_matches;
