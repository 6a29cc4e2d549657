//! The client-reader role: every client-server endpoint except `/sync`. Reads go straight to
//! the database (through `ganglion-state`'s caches); writes go to the master through the
//! `Master` trait, so this crate never writes a stream table.

mod accounts;
mod keys;
mod presence;
mod push;
mod rooms;
mod third_party;
mod user_directory;
mod voip;

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
    routes.extend(other_routes());
    ganglion_http::with_r0_aliases(routes)
}

/// Third-party identifiers and networks, which this server does not support, and TURN.
fn other_routes() -> Vec<Route<ClientState>> {
    use ganglion_types::EndpointClass::{Auth, ClientRead, ClientWrite};
    vec![
        // A search, so a read, though it is a POST.
        Route::post("/_matrix/client/v3/user_directory/search", ClientRead, user_directory::search),
        Route::get("/_matrix/client/v3/account/3pid", ClientRead, third_party::threepids),
        Route::post("/_matrix/client/v3/account/3pid", ClientWrite, third_party::add_threepid),
        Route::post("/_matrix/client/v3/account/3pid/add", ClientWrite, third_party::add_threepid),
        Route::post("/_matrix/client/v3/account/3pid/bind", ClientWrite, third_party::add_threepid),
        Route::post("/_matrix/client/v3/account/3pid/delete", ClientWrite, third_party::forget_threepid),
        Route::post("/_matrix/client/v3/account/3pid/unbind", ClientWrite, third_party::forget_threepid),
        Route::post("/_matrix/client/v3/account/3pid/email/requestToken", Auth, third_party::request_token),
        Route::post("/_matrix/client/v3/account/3pid/msisdn/requestToken", Auth, third_party::request_token),
        Route::post("/_matrix/client/v3/register/email/requestToken", Auth, third_party::request_token),
        Route::post("/_matrix/client/v3/register/msisdn/requestToken", Auth, third_party::request_token),
        Route::post(
            "/_matrix/client/v3/account/password/email/requestToken",
            Auth,
            third_party::request_token,
        ),
        Route::post(
            "/_matrix/client/v3/account/password/msisdn/requestToken",
            Auth,
            third_party::request_token,
        ),
        Route::get("/_matrix/client/v3/thirdparty/protocols", ClientRead, third_party::protocols),
        Route::get(
            "/_matrix/client/v3/thirdparty/protocol/{protocol}",
            ClientRead,
            third_party::unknown_protocol,
        ),
        Route::get(
            "/_matrix/client/v3/thirdparty/location/{protocol}",
            ClientRead,
            third_party::unknown_protocol,
        ),
        Route::get(
            "/_matrix/client/v3/thirdparty/user/{protocol}",
            ClientRead,
            third_party::unknown_protocol,
        ),
        Route::get("/_matrix/client/v3/thirdparty/location", ClientRead, third_party::no_matches),
        Route::get("/_matrix/client/v3/thirdparty/user", ClientRead, third_party::no_matches),
        Route::get("/_matrix/client/v3/voip/turnServer", ClientRead, voip::turn_server),
    ]
}
