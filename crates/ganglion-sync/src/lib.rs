//! The sync role: `GET /_matrix/client/v3/sync`. A request computes the changes between its
//! `since` token and the current positions; when there are none it waits, woken by the bus
//! through the `Notifier` only for rows of the user's rooms or the user, never by polling.
//! Syncing devices are reported to the master for presence, throttled per device.

mod body;
mod compute;
mod e2ee;
mod ephemeral;
pub mod filter;
mod handler;
mod memory;
mod presence;
mod sliding;
mod timeline;
mod unread;
mod wait;

use std::sync::Arc;

use axum::extract::FromRef;
use ganglion_config::Config;
use ganglion_http::{Authenticator, Route};
use ganglion_replication::{CatchUp, Notifier, Positions, RecentEvents, TypingStore};
use ganglion_state::Caches;
use ganglion_storage::Db;
use ganglion_types::EndpointClass;
pub use memory::{SyncMemory, SyncStats};
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
    /// Each user's rooms, ignore list and filters, to-device clean-up marks, answer counters.
    pub memory: Arc<SyncMemory>,
    /// In a cluster: reaches a `since` token handed out by another sync worker.
    pub catch_up: Option<Arc<dyn CatchUp>>,
    /// The devices syncing here, reported to the master for presence.
    pub syncing: Arc<SyncingDevices>,
    /// Long-polls waiting, wake-ups.
    pub metrics: Arc<ganglion_metrics::SyncMetrics>,
}

impl FromRef<SyncState> for Arc<dyn Authenticator> {
    fn from_ref(state: &SyncState) -> Self {
        state.authenticator.clone()
    }
}

pub fn routes() -> Vec<Route<SyncState>> {
    ganglion_http::with_r0_aliases(vec![
        Route::get("/_matrix/client/v3/sync", EndpointClass::Sync, handler::sync),
        Route::post(
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
            EndpointClass::Sync,
            sliding::sliding_sync,
        ),
        // Device-list changes are the sync's to compute; any reader may answer them.
        Route::get("/_matrix/client/v3/keys/changes", EndpointClass::ClientRead, e2ee::changes),
    ])
}

#[cfg(test)]
mod tests;
