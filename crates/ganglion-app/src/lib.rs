//! Composes the roles named in the config into one process and runs it: connects storage,
//! loads the signing key, wires the bus, builds the router from the route table, and serves.
//!
//! `role = "all"` (the embedded default) runs the master, sync and client-reader services in
//! one process with the in-process bus.

mod auth;

use std::{future::Future, sync::Arc, time::Duration};

use axum::{Router, extract::Request, middleware::Next, response::Response};
use ganglion_client::ClientState;
use ganglion_config::Config;
use ganglion_events::ServerKey;
use ganglion_http::{Authenticator, RateLimiter, Route, RouteInfo, router_from_routes};
use ganglion_master::MasterService;
use ganglion_replication::{InProcessBus, Notifier, Positions, RecentEvents, TypingStore};
use ganglion_rpc::Master;
use ganglion_state::Caches;
use ganglion_storage::Db;
use ganglion_sync::SyncState;
use ganglion_types::{EndpointClass, Role, StreamPosition, SyncToken};
use http::HeaderValue;
use tokio::net::TcpListener;

pub use auth::DbAuthenticator;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("storage: {0}")]
    Storage(#[from] ganglion_storage::StorageError),
    #[error("signing key: {0}")]
    Key(#[from] ganglion_events::KeyError),
    #[error("master: {0}")]
    Master(#[from] ganglion_rpc::MasterError),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: String, source: std::io::Error },
    #[error("server: {0}")]
    Serve(std::io::Error),
}

/// The route table: every endpoint of every role, one line each, with its class. Handlers are
/// one hop away, in the crate the route names.
pub fn route_table() -> Vec<RouteInfo> {
    let mut routes: Vec<RouteInfo> = ganglion_client::routes().iter().map(Route::info).collect();
    routes.extend(ganglion_sync::routes().iter().map(Route::info));
    routes.sort();
    routes
}

/// Runs the process described by `config` until `shutdown` completes. `on_ready` receives the
/// bound client API address.
pub async fn run(
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(std::net::SocketAddr),
) -> Result<(), AppError> {
    // Bind first: with port 0 the real address is only known now, and everything that
    // advertises it (well-known) must see it.
    let listener = TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| AppError::Listen { address: config.http.listen.to_string(), source })?;
    config.http.listen = listener.local_addr().map_err(AppError::Serve)?;
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| AppError::Listen { address: config.data_dir.display().to_string(), source })?;
    let key =
        Arc::new(ServerKey::load_or_generate(&config.server_name, &config.data_dir.join("signing.key"))?);
    let db = Db::connect(&config.database_url(), config.database.max_connections).await?;
    tracing::info!(backend = ?db.backend, "database ready");

    let caches = Arc::new(Caches::new());
    let typing = Arc::new(TypingStore::new());
    let notifier = Notifier::new();
    let typing_epoch = ganglion_storage::now_ms().max(0) as u64;
    let start = initial_token(&db, typing_epoch).await?;
    let positions = Arc::new(Positions::new(start));
    let recent = Arc::new(RecentEvents::new(start.events));
    let bus = Arc::new(InProcessBus::new(positions.clone(), notifier.clone(), recent.clone()));
    let limiter = Arc::new(RateLimiter::new(&config.rate_limits));
    let authenticator: Arc<dyn Authenticator> =
        Arc::new(DbAuthenticator::new(db.clone(), caches.clone(), limiter.clone()));

    let role = config.worker.role;
    let master = MasterService::new(
        db.clone(),
        caches.clone(),
        key,
        config.clone(),
        bus,
        typing.clone(),
        positions.clone(),
    )
    .await?;
    let mut routes: Vec<Route<()>> = Vec::new();
    if role_serves(role, EndpointClass::ClientRead) {
        let master: Arc<dyn Master> = master.clone();
        let state = ClientState::new(
            db.clone(),
            caches.clone(),
            master,
            authenticator.clone(),
            config.clone(),
            positions.clone(),
            typing.clone(),
        );
        routes.extend(
            ganglion_client::routes()
                .into_iter()
                .filter(|r| role.serves(r.class))
                .map(|r| r.with_state(state.clone())),
        );
    }
    if role_serves(role, EndpointClass::Sync) {
        let state = SyncState {
            db: db.clone(),
            caches: caches.clone(),
            authenticator: authenticator.clone(),
            config: config.clone(),
            positions: positions.clone(),
            notifier: notifier.clone(),
            typing: typing.clone(),
            recent: recent.clone(),
            memberships: Arc::new(ganglion_sync::MembershipCache::default()),
        };
        routes.extend(ganglion_sync::routes().into_iter().map(|r| r.with_state(state.clone())));
    }

    let typing_master = master.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            interval.tick().await;
            typing_master.expire_typing();
        }
    });

    let instance = HeaderValue::from_str(&format!("{}/{}", role.as_str(), config.worker.name))
        .unwrap_or(HeaderValue::from_static("ganglion"));
    let router: Router = router_from_routes(routes, limiter, config.http.max_body_bytes).layer(
        axum::middleware::from_fn(move |request: Request, next: Next| {
            let instance = instance.clone();
            async move {
                let mut response: Response = next.run(request).await;
                response.headers_mut().insert("x-ganglion-instance", instance);
                response
            }
        }),
    );
    let address = config.http.listen;
    tracing::info!(%address, role = role.as_str(), server_name = %config.server_name, "client API listening");
    on_ready(address);
    ganglion_http::serve(listener, router, shutdown).await.map_err(AppError::Serve)
}

fn role_serves(role: Role, class: EndpointClass) -> bool {
    role.serves(class)
}

async fn initial_token(db: &Db, typing_epoch: u64) -> Result<SyncToken, AppError> {
    let mut conn = db.conn().await?;
    Ok(SyncToken {
        events: StreamPosition(ganglion_storage::events::max_event_stream_pos(&mut conn).await?),
        receipts: StreamPosition(ganglion_storage::streams::max_receipt_stream_pos(&mut conn).await?),
        typing: StreamPosition::ZERO,
        account_data: StreamPosition(
            ganglion_storage::streams::max_account_data_stream_pos(&mut conn).await?,
        ),
        typing_epoch,
    })
}
