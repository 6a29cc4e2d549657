//! The client-reader role: every client-server endpoint except `/sync`. Reads go straight to
//! the database (through `ganglion-state`'s caches); writes go to the master through the
//! `Master` trait, so this crate never writes a stream table.

mod accounts;
mod keys;
mod presence;
mod push;
mod rooms;

use std::sync::Arc;

use axum::extract::FromRef;
use ganglion_config::Config;
use ganglion_http::{Authenticator, Route};
use ganglion_replication::{Positions, TypingStore};
use ganglion_rpc::Master;
use ganglion_state::Caches;
use ganglion_storage::Db;

/// Everything a client-reader handler may use.
#[derive(Clone)]
pub struct ClientState {
    pub db: Db,
    pub caches: Arc<Caches>,
    pub master: Arc<dyn Master>,
    pub authenticator: Arc<dyn Authenticator>,
    pub config: Arc<Config>,
    pub positions: Arc<Positions>,
    pub typing: Arc<TypingStore>,
    /// In-progress user-interactive auth sessions.
    pub uia: Arc<accounts::UiaSessions>,
    /// Requests to other servers (remote profiles).
    pub federation: ganglion_federation::Federation,
}

impl FromRef<ClientState> for Arc<dyn Authenticator> {
    fn from_ref(state: &ClientState) -> Self {
        state.authenticator.clone()
    }
}

impl ClientState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Db,
        caches: Arc<Caches>,
        master: Arc<dyn Master>,
        authenticator: Arc<dyn Authenticator>,
        config: Arc<Config>,
        positions: Arc<Positions>,
        typing: Arc<TypingStore>,
        federation: ganglion_federation::Federation,
    ) -> ClientState {
        ClientState {
            db,
            caches,
            master,
            authenticator,
            config,
            positions,
            typing,
            uia: Arc::new(accounts::UiaSessions::default()),
            federation,
        }
    }
}

/// The client-reader's routes, with the `r0` form of each that existed in r0. Each handler is
/// one hop from here.
pub fn routes() -> Vec<Route<ClientState>> {
    let mut routes = accounts::routes();
    routes.extend(rooms::routes());
    routes.extend(keys::routes());
    routes.extend(presence::routes());
    routes.extend(push::routes());
    ganglion_http::with_r0_aliases(routes)
}
