//! The sync role: `GET /_matrix/client/v3/sync`. A request computes the changes between its
//! `since` token and the current positions; when there are none it waits, woken by the bus
//! through the `Notifier` only for rows of the user's rooms or the user, never by polling.

mod compute;
mod ephemeral;
pub mod filter;
mod handler;
mod timeline;
mod wait;

use std::sync::Arc;

use axum::extract::FromRef;
use ganglion_config::Config;
use ganglion_http::{Authenticator, Route};
use ganglion_replication::{Notifier, Positions, TypingStore};
use ganglion_state::Caches;
use ganglion_storage::Db;
use ganglion_types::EndpointClass;

#[derive(Clone)]
pub struct SyncState {
    pub db: Db,
    pub caches: Arc<Caches>,
    pub authenticator: Arc<dyn Authenticator>,
    pub config: Arc<Config>,
    pub positions: Arc<Positions>,
    pub notifier: Arc<Notifier>,
    pub typing: Arc<TypingStore>,
}

impl FromRef<SyncState> for Arc<dyn Authenticator> {
    fn from_ref(state: &SyncState) -> Self {
        state.authenticator.clone()
    }
}

pub fn routes() -> Vec<Route<SyncState>> {
    vec![Route::get("/_matrix/client/v3/sync", EndpointClass::Sync, handler::sync)]
}

#[cfg(test)]
mod tests;
