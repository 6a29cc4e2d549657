//! The body of a simplified sliding sync request (MSC4186). Nothing in it is sticky: a client
//! sends its whole configuration with every request, so the connection keeps only what it sent.

use std::collections::{BTreeMap, BTreeSet};

use ganglion_http::MatrixError;
use serde::Deserialize;

/// Bounds that keep one request's work proportionate.
const MAX_LISTS: usize = 64;
const MAX_RANGES: usize = 16;
const MAX_SUBSCRIPTIONS: usize = 512;
const MAX_REQUIRED_STATE: usize = 128;
/// Longest `conn_id` or list name, in bytes.
const MAX_NAME: usize = 255;
/// A timeline asks for at most this many events per room.
pub(crate) const MAX_TIMELINE_LIMIT: u64 = 1000;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SlidingRequest {
    #[serde(default)]
    pub conn_id: Option<String>,
    #[serde(default)]
    pub txn_id: Option<String>,
    #[serde(default)]
    pub lists: BTreeMap<String, ListRequest>,
    #[serde(default)]
    pub room_subscriptions: BTreeMap<String, RoomConfig>,
    #[serde(default)]
    pub extensions: Extensions,
}

/// What to send of each room: its newest events and which of its state.
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct RoomConfig {
    /// `[type, state_key]` pairs; `*` matches any, `$ME` is the user, `$LAZY` (members only)
    /// the senders of the timeline's events.
    #[serde(default)]
    pub required_state: Vec<(String, String)>,
    #[serde(default)]
    pub timeline_limit: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListRequest {
    /// Inclusive index ranges into the list sorted by recency.
    #[serde(default)]
    pub ranges: Vec<(u64, u64)>,
    #[serde(flatten)]
    pub room: RoomConfig,
    #[serde(default)]
    pub filters: Option<ListFilters>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct ListFilters {
    pub is_dm: Option<bool>,
    pub is_encrypted: Option<bool>,
    pub is_invite: Option<bool>,
    pub spaces: Option<Vec<String>>,
    /// `null` in the list stands for rooms without a type.
    pub room_types: Option<Vec<Option<String>>>,
    #[serde(default)]
    pub not_room_types: Vec<Option<String>>,
}

impl ListFilters {
    /// Whether a filter needs the rooms' create and encryption state.
    pub(crate) fn needs_room_kind(&self) -> bool {
        self.is_encrypted.is_some() || self.room_types.is_some() || !self.not_room_types.is_empty()
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Extensions {
    pub to_device: Option<ToDeviceExtension>,
    pub e2ee: Option<Toggle>,
    pub account_data: Option<ScopedExtension>,
    pub receipts: Option<ScopedExtension>,
    pub typing: Option<ScopedExtension>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Toggle {
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ToDeviceExtension {
    pub enabled: Option<bool>,
    pub limit: Option<u64>,
    pub since: Option<String>,
}

/// An extension about rooms: the rooms of `lists` (their ranges) and `rooms` (subscriptions);
/// either absent or `*` means all of them.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ScopedExtension {
    pub enabled: Option<bool>,
    pub lists: Option<Vec<String>>,
    pub rooms: Option<Vec<String>>,
}

impl ScopedExtension {
    pub(crate) fn on(extension: &Option<ScopedExtension>) -> Option<&ScopedExtension> {
        extension.as_ref().filter(|extension| extension.enabled == Some(true))
    }

    /// Whether a room that is in `lists` (by name) or subscribed to is in this extension's scope.
    pub(crate) fn covers(&self, room_id: &str, lists: &BTreeSet<&str>, subscribed: bool) -> bool {
        let all =
            |names: &Option<Vec<String>>| names.as_ref().is_none_or(|names| names.iter().any(|n| n == "*"));
        let by_list = all(&self.lists)
            || self
                .lists
                .as_ref()
                .is_some_and(|names| names.iter().any(|name| lists.contains(name.as_str())));
        let by_room = match &self.rooms {
            None => subscribed,
            Some(rooms) => rooms.iter().any(|room| room == "*" && subscribed || room == room_id),
        };
        (by_list && !lists.is_empty()) || by_room
    }
}

impl SlidingRequest {
    pub(crate) fn check(&self) -> Result<(), MatrixError> {
        if self.conn_id.as_ref().is_some_and(|conn_id| conn_id.len() > MAX_NAME) {
            return Err(MatrixError::invalid_param(format!("`conn_id` is longer than {MAX_NAME} bytes")));
        }
        if self.lists.keys().any(|name| name.len() > MAX_NAME) {
            return Err(MatrixError::invalid_param(format!("A list name is longer than {MAX_NAME} bytes")));
        }
        if self.lists.len() > MAX_LISTS {
            return Err(MatrixError::invalid_param(format!("At most {MAX_LISTS} lists")));
        }
        if self.room_subscriptions.len() > MAX_SUBSCRIPTIONS {
            return Err(MatrixError::invalid_param(format!(
                "At most {MAX_SUBSCRIPTIONS} room subscriptions"
            )));
        }
        for (name, list) in &self.lists {
            if list.ranges.len() > MAX_RANGES {
                return Err(MatrixError::invalid_param(format!("List {name}: at most {MAX_RANGES} ranges")));
            }
            if list.ranges.iter().any(|(start, end)| start > end) {
                return Err(MatrixError::invalid_param(format!(
                    "List {name}: a range ends before it starts"
                )));
            }
            list.room.check()?;
        }
        for (room_id, subscription) in &self.room_subscriptions {
            if ganglion_events::ruma::RoomId::parse(room_id).is_err() {
                return Err(MatrixError::invalid_param(format!("Not a room id: {room_id}")));
            }
            subscription.check()?;
        }
        Ok(())
    }
}

impl RoomConfig {
    fn check(&self) -> Result<(), MatrixError> {
        if self.required_state.len() > MAX_REQUIRED_STATE {
            return Err(MatrixError::invalid_param(format!(
                "At most {MAX_REQUIRED_STATE} required_state entries"
            )));
        }
        Ok(())
    }

    pub(crate) fn timeline_limit(&self) -> usize {
        self.timeline_limit.unwrap_or(0).min(MAX_TIMELINE_LIMIT) as usize
    }

    /// The config with its `required_state` sorted and without repeats, so two configs asking
    /// for the same state compare equal.
    pub(crate) fn normalized(&self) -> RoomConfig {
        let mut config = self.clone();
        config.required_state.sort();
        config.required_state.dedup();
        config
    }

    /// This config and `other` together: the larger timeline and both sets of state (normalized).
    pub(crate) fn merge(&mut self, other: &RoomConfig) {
        self.timeline_limit = Some(self.timeline_limit.unwrap_or(0).max(other.timeline_limit.unwrap_or(0)));
        self.required_state.extend(other.required_state.iter().cloned());
        self.required_state.sort();
        self.required_state.dedup();
    }
}
