//! The typing stream: ephemeral, held in the writer's memory, positions restart with the
//! process (the sync token carries the writer's epoch to tell).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use ganglion_types::StreamPosition;
use parking_lot::Mutex;

#[derive(Default)]
struct Inner {
    position: i64,
    /// room id -> (user id -> expiry)
    typing: HashMap<String, HashMap<String, Instant>>,
    /// room id -> position of its last change
    changed_at: HashMap<String, i64>,
}

#[derive(Default)]
pub struct TypingStore {
    inner: Mutex<Inner>,
}

/// Longest typing timeout a client may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

impl TypingStore {
    pub fn new() -> TypingStore {
        TypingStore::default()
    }

    /// Records that `user` is (or stopped) typing in `room`; returns the new position when the
    /// visible set changed.
    pub fn set(
        &self,
        room_id: &str,
        user_id: &str,
        typing: bool,
        timeout: Duration,
    ) -> Option<StreamPosition> {
        let mut inner = self.inner.lock();
        let users = inner.typing.entry(room_id.to_owned()).or_default();
        let changed = if typing {
            users.insert(user_id.to_owned(), Instant::now() + timeout.min(MAX_TIMEOUT)).is_none()
        } else {
            users.remove(user_id).is_some()
        };
        if users.is_empty() {
            inner.typing.remove(room_id);
        }
        if !changed {
            return None;
        }
        inner.position += 1;
        let position = inner.position;
        inner.changed_at.insert(room_id.to_owned(), position);
        Some(StreamPosition(position))
    }

    /// Drops expired entries; returns the rooms that changed and the new position.
    pub fn expire(&self, now: Instant) -> Vec<(String, StreamPosition)> {
        let mut inner = self.inner.lock();
        let mut changed_rooms = Vec::new();
        for (room_id, users) in inner.typing.iter_mut() {
            let before = users.len();
            users.retain(|_, expiry| *expiry > now);
            if users.len() != before {
                changed_rooms.push(room_id.clone());
            }
        }
        inner.typing.retain(|_, users| !users.is_empty());
        let mut changes = Vec::with_capacity(changed_rooms.len());
        for room_id in changed_rooms {
            inner.position += 1;
            let position = inner.position;
            inner.changed_at.insert(room_id.clone(), position);
            changes.push((room_id, StreamPosition(position)));
        }
        changes
    }

    pub fn position(&self) -> StreamPosition {
        StreamPosition(self.inner.lock().position)
    }

    /// Users typing in `room` now, sorted.
    pub fn typing_in_room(&self, room_id: &str) -> Vec<String> {
        let inner = self.inner.lock();
        let mut users: Vec<String> =
            inner.typing.get(room_id).map(|users| users.keys().cloned().collect()).unwrap_or_default();
        users.sort();
        users
    }

    /// Whether `room`'s typing set changed in `after < position <= up_to`.
    pub fn changed_between(&self, room_id: &str, after: StreamPosition, up_to: StreamPosition) -> bool {
        let inner = self.inner.lock();
        inner.changed_at.get(room_id).is_some_and(|position| *position > after.0 && *position <= up_to.0)
    }
}
