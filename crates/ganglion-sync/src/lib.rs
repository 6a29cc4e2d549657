//! The sync role: `GET /_matrix/client/v3/sync`. A request computes the changes between its
//! `since` token and the current positions; when there are none it waits, woken by the bus
//! through the `Notifier` only for rows of the user's rooms or the user, never by polling.
//! Syncing devices are reported to the master for presence, throttled per device.

mod compute;
mod e2ee;
mod ephemeral;
pub mod filter;
mod handler;
mod presence;
mod timeline;
mod wait;

use std::sync::Arc;

use axum::extract::FromRef;
use ganglion_config::Config;
use ganglion_http::{Authenticator, Route};
use ganglion_replication::{CatchUp, Notifier, Positions, RecentEvents, TypingStore};
use ganglion_state::Caches;
use ganglion_storage::Db;
use ganglion_types::EndpointClass;
pub use presence::SyncingDevices;

#[derive(Clone)]
pub struct SyncState {
    pub db: Db,
    pub caches: Arc<Caches>,
    pub authenticator: Arc<dyn Authenticator>,
    pub config: Arc<Config>,
    pub positions: Arc<Positions>,
    pub notifier: Arc<Notifier>,
    pub typing: Arc<TypingStore>,
    /// The newest events per room, fed by the bus: incremental syncs read their timelines here.
    pub recent: Arc<RecentEvents>,
    pub memberships: Arc<MembershipCache>,
    pub ignored_users: Arc<IgnoredUsersCache>,
    /// In a cluster: reaches a `since` token handed out by another sync worker.
    pub catch_up: Option<Arc<dyn CatchUp>>,
    /// The devices syncing here, reported to the master for presence.
    pub syncing: Arc<SyncingDevices>,
}

/// A user's rooms, as read from the database.
type UserRooms = Arc<Vec<ganglion_storage::streams::UserRoomRow>>;

/// Each user's rooms as last read from the database, with the events position read at; valid
/// while `RecentEvents` saw no member event about the user since.
#[derive(Default)]
pub struct MembershipCache {
    by_user: parking_lot::Mutex<std::collections::HashMap<String, (i64, UserRooms)>>,
}

impl MembershipCache {
    pub(crate) fn get(
        &self,
        recent: &RecentEvents,
        user_id: &str,
    ) -> Option<Arc<Vec<ganglion_storage::streams::UserRoomRow>>> {
        let by_user = self.by_user.lock();
        let (loaded_at, rows) = by_user.get(user_id)?;
        (recent.membership_changed_after(user_id, *loaded_at) == Some(false)).then(|| rows.clone())
    }

    pub(crate) fn insert(
        &self,
        user_id: &str,
        loaded_at: i64,
        rows: Arc<Vec<ganglion_storage::streams::UserRoomRow>>,
    ) {
        let mut by_user = self.by_user.lock();
        if by_user.len() >= 100_000 {
            by_user.clear();
        }
        by_user.insert(user_id.to_owned(), (loaded_at, rows));
    }
}

/// The users a user ignores (`m.ignored_user_list`), parsed.
pub(crate) type IgnoredUsers = Arc<std::collections::HashSet<String>>;

/// Each user's ignored users as last read from the database, with the account data position
/// read at; valid while `RecentEvents` saw no account data of the user since. Every sync needs
/// the list, and almost nobody changes it.
#[derive(Default)]
pub struct IgnoredUsersCache {
    by_user: parking_lot::Mutex<std::collections::HashMap<String, (i64, IgnoredUsers)>>,
}

impl IgnoredUsersCache {
    pub(crate) fn get(&self, recent: &RecentEvents, user_id: &str) -> Option<IgnoredUsers> {
        let by_user = self.by_user.lock();
        let (loaded_at, ignored) = by_user.get(user_id)?;
        (recent.account_data_changed_after(user_id, *loaded_at) == Some(false)).then(|| ignored.clone())
    }

    pub(crate) fn insert(&self, user_id: &str, loaded_at: i64, ignored: IgnoredUsers) {
        let mut by_user = self.by_user.lock();
        if by_user.len() >= 100_000 {
            by_user.clear();
        }
        by_user.insert(user_id.to_owned(), (loaded_at, ignored));
    }
}

impl FromRef<SyncState> for Arc<dyn Authenticator> {
    fn from_ref(state: &SyncState) -> Self {
        state.authenticator.clone()
    }
}

pub fn routes() -> Vec<Route<SyncState>> {
    ganglion_http::with_r0_aliases(vec![
        Route::get("/_matrix/client/v3/sync", EndpointClass::Sync, handler::sync),
        // Device-list changes are the sync's to compute; any reader may answer them.
        Route::get("/_matrix/client/v3/keys/changes", EndpointClass::ClientRead, e2ee::changes),
    ])
}

#[cfg(test)]
mod tests;
