//! The federation API: what other servers call. Server keys and the notary (`keys`), the
//! signed-request extractor (`Signed`), queries (`query`) and discovery (`/.well-known/matrix/server`).
//!
//! Served by `role = "all"` (on its TLS listener, `federation.listen`) and, in a cluster, by the
//! processes whose role serves the federation classes, behind the load balancer.

mod edus;
mod events;
mod gaps;
mod hierarchy;
mod invite;
mod join;
mod keys;
mod query;
mod send;
mod signed;
mod user;

use std::sync::Arc;

use ganglion_config::Config;
use ganglion_events::ServerKey;
use ganglion_federation::Federation;
use ganglion_http::Route;
use ganglion_storage::Db;
use ganglion_types::EndpointClass::{Federation as Fed, Keys, WellKnown};

pub use signed::Signed;

#[derive(Clone)]
pub struct FederationState {
    pub db: Db,
    pub config: Arc<Config>,
    pub key: Arc<ServerKey>,
    pub federation: Federation,
    /// Claims of one-time keys go through the master.
    pub master: Arc<dyn ganglion_rpc::Master>,
    pub metrics: Arc<ganglion_metrics::FederationMetrics>,
    pub caches: Arc<ganglion_state::Caches>,
}

pub fn routes() -> Vec<Route<FederationState>> {
    #[rustfmt::skip]
    let routes = vec![
        Route::get("/_matrix/key/v2/server", Keys, keys::server_keys),
        Route::get("/_matrix/key/v2/query/{serverName}", Keys, keys::query_one),
        Route::post("/_matrix/key/v2/query", Keys, keys::query),
        Route::get("/_matrix/federation/v1/version", Fed, query::version),
        Route::put("/_matrix/federation/v1/send/{txnId}", Fed, send::send_transaction),
        Route::get("/_matrix/federation/v1/make_join/{roomId}/{userId}", Fed, join::make_join),
        Route::put("/_matrix/federation/v2/send_join/{roomId}/{eventId}", Fed, join::send_join),
        Route::get("/_matrix/federation/v1/make_leave/{roomId}/{userId}", Fed, join::make_leave),
        Route::put("/_matrix/federation/v2/send_leave/{roomId}/{eventId}", Fed, join::send_leave),
        Route::get("/_matrix/federation/v1/make_knock/{roomId}/{userId}", Fed, join::make_knock),
        Route::put("/_matrix/federation/v1/send_knock/{roomId}/{eventId}", Fed, join::send_knock),
        Route::put("/_matrix/federation/v2/invite/{roomId}/{eventId}", Fed, invite::invite),
        Route::get("/_matrix/federation/v1/event/{eventId}", Fed, events::event),
        Route::get("/_matrix/federation/v1/state/{roomId}", Fed, events::room_state),
        Route::get("/_matrix/federation/v1/state_ids/{roomId}", Fed, events::state_ids),
        Route::get("/_matrix/federation/v1/event_auth/{roomId}/{eventId}", Fed, events::event_auth),
        Route::get("/_matrix/federation/v1/backfill/{roomId}", Fed, events::backfill),
        Route::get("/_matrix/federation/v1/timestamp_to_event/{roomId}", Fed, events::timestamp_to_event),
        Route::get("/_matrix/federation/v1/hierarchy/{roomId}", Fed, hierarchy::hierarchy),
        Route::post("/_matrix/federation/v1/get_missing_events/{roomId}", Fed, events::get_missing_events),
        Route::get("/_matrix/federation/v1/query/profile", Fed, query::profile),
        Route::get("/_matrix/federation/v1/openid/userinfo", Fed, query::openid_userinfo),
        Route::get("/_matrix/federation/v1/query/directory", Fed, query::directory),
        Route::get("/_matrix/federation/v1/publicRooms", Fed, query::public_rooms),
        Route::post("/_matrix/federation/v1/publicRooms", Fed, query::search_public_rooms),
        Route::post("/_matrix/federation/v1/user/keys/query", Fed, user::query_keys),
        Route::post("/_matrix/federation/v1/user/keys/claim", Fed, user::claim_keys),
        Route::get("/_matrix/federation/v1/user/devices/{userId}", Fed, user::devices),
        Route::get("/.well-known/matrix/server", WellKnown, query::well_known_server),
    ];
    routes
}
