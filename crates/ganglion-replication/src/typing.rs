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

    /// Drops expired entries; returns the rooms that changed, each with its new position and
    /// the users who stopped typing there.
    pub fn expire(&self, now: Instant) -> Vec<(String, StreamPosition, Vec<String>)> {
        let mut inner = self.inner.lock();
        let mut changed_rooms = Vec::new();
        for (room_id, users) in inner.typing.iter_mut() {
            let expired: Vec<String> =
                users.iter().filter(|(_, expiry)| **expiry <= now).map(|(user, _)| user.clone()).collect();
            if !expired.is_empty() {
                users.retain(|_, expiry| *expiry > now);
                changed_rooms.push((room_id.clone(), expired));
            }
        }
        inner.typing.retain(|_, users| !users.is_empty());
        let mut changes = Vec::with_capacity(changed_rooms.len());
        for (room_id, expired) in changed_rooms {
            inner.position += 1;
            let position = inner.position;
            inner.changed_at.insert(room_id.clone(), position);
            changes.push((room_id, StreamPosition(position), expired));
        }
        changes
    }

    pub fn position(&self) -> StreamPosition {
        StreamPosition(self.inner.lock().position)
    }

    /// Every room where someone is typing, with its typers (sorted), and the position.
    pub fn snapshot(&self) -> (StreamPosition, Vec<(String, Vec<String>)>) {
        let inner = self.inner.lock();
        let mut rooms: Vec<(String, Vec<String>)> = inner
            .typing
            .iter()
            .map(|(room, users)| {
                let mut users: Vec<String> = users.keys().cloned().collect();
                users.sort();
                (room.clone(), users)
            })
            .collect();
        rooms.sort();
        (StreamPosition(inner.position), rooms)
    }

    /// A follower's copy: replaces everything with the writer's snapshot. Every room in it
    /// counts as changed at `position`, so a sync from an older token resends them.
    pub fn reset(&self, position: StreamPosition, rooms: &[(String, Vec<String>)]) {
        let mut inner = self.inner.lock();
        let previous: Vec<String> = inner.typing.keys().cloned().collect();
        inner.typing.clear();
        inner.changed_at.clear();
        inner.position = position.0;
        // The writer expires entries and tells us; ours never expire on their own.
        let never = Instant::now() + Duration::from_secs(10 * 365 * 24 * 3600);
        for (room, users) in rooms {
            inner.typing.insert(room.clone(), users.iter().map(|u| (u.clone(), never)).collect());
            inner.changed_at.insert(room.clone(), position.0);
        }
        for room in previous {
            inner.changed_at.insert(room, position.0);
        }
    }

    /// A follower's copy: `room`'s typers as of the writer's `position`. Older positions are
    /// ignored (replays after a reconnect).
    pub fn apply(&self, room_id: &str, users: &[String], position: StreamPosition) {
        let mut inner = self.inner.lock();
        if position.0 <= inner.position {
            return;
        }
        let never = Instant::now() + Duration::from_secs(10 * 365 * 24 * 3600);
        inner.position = position.0;
        if users.is_empty() {
            inner.typing.remove(room_id);
        } else {
            inner.typing.insert(room_id.to_owned(), users.iter().map(|u| (u.clone(), never)).collect());
        }
        inner.changed_at.insert(room_id.to_owned(), position.0);
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
