//! The client-server API's event filters: the `RoomEventFilter` that `/sync` sections and
//! `/messages` share, and event-type patterns. Parsing is the caller's (its errors are HTTP's).

use serde::Deserialize;

/// Matches an event type against a filter pattern, where `*` stands for any run of characters.
pub fn type_matches(pattern: &str, kind: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = kind.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(index) => rest = &rest[index + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A filter on the events of one section of a room.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RoomEventFilter {
    pub limit: Option<u64>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub contains_url: Option<bool>,
    pub lazy_load_members: bool,
    pub include_redundant_members: bool,
    pub unread_thread_notifications: bool,
}

impl RoomEventFilter {
    pub fn allows_room(&self, room_id: &str) -> bool {
        allows_room(&self.rooms, &self.not_rooms, room_id)
    }

    /// Whether an event of type `kind` from `sender` passes; `has_url` says whether its content
    /// has a `url` key. The `not_` lists win over the allow lists.
    pub fn allows_event(&self, kind: &str, sender: Option<&str>, has_url: bool) -> bool {
        allows_type(&self.types, &self.not_types, kind)
            && allows_sender(&self.senders, &self.not_senders, sender)
            && self.contains_url.is_none_or(|wanted| wanted == has_url)
    }

    /// Whether events of type `kind` can pass at all (for sections whose events have no sender).
    pub fn allows_type(&self, kind: &str) -> bool {
        allows_type(&self.types, &self.not_types, kind)
    }

    /// Whether matching needs each event's content (only for `contains_url`).
    pub fn needs_content(&self) -> bool {
        self.contains_url.is_some()
    }

    /// Whether the filter looks at anything but the room: when it does not, every event of an
    /// allowed room passes and matching can be skipped.
    pub fn filters_events(&self) -> bool {
        self.types.is_some()
            || !self.not_types.is_empty()
            || self.senders.is_some()
            || !self.not_senders.is_empty()
            || self.contains_url.is_some()
    }
}

pub fn allows_room(rooms: &Option<Vec<String>>, not_rooms: &[String], room_id: &str) -> bool {
    !not_rooms.iter().any(|room| room == room_id)
        && rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|room| room == room_id))
}

pub fn allows_type(types: &Option<Vec<String>>, not_types: &[String], kind: &str) -> bool {
    !not_types.iter().any(|pattern| type_matches(pattern, kind))
        && types.as_ref().is_none_or(|types| types.iter().any(|pattern| type_matches(pattern, kind)))
}

/// A sender list cannot match an event without a sender (e.g. `m.typing`), so such events pass
/// the sender lists untouched.
pub fn allows_sender(senders: &Option<Vec<String>>, not_senders: &[String], sender: Option<&str>) -> bool {
    let Some(sender) = sender else { return true };
    !not_senders.iter().any(|excluded| excluded == sender)
        && senders.as_ref().is_none_or(|senders| senders.iter().any(|allowed| allowed == sender))
}
