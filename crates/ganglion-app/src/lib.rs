//! Composes the roles named in the config into one process and runs it: connects storage,
//! loads the signing key, wires the bus, builds the router from the route table, and serves.
//!
//! `role = "all"` (the embedded default) runs the master, sync, client-reader and media services
//! in one process with the in-process bus. In a cluster, `master` publishes on Redis and serves
//! gRPC; `sync`, `client-reader` and `media` call the master over gRPC and follow its streams
//! (a media worker for the revoked sessions of the caches stream).

mod auth;
mod balancer;
mod cluster;
pub mod compliance;
pub mod haproxy;
pub mod nginx;

use std::{future::Future, sync::Arc, time::Duration};
use tracing::Instrument as _;

use axum::{Router, extract::Request, middleware::Next, response::Response};
use ganglion_client::ClientState;
use ganglion_config::{AddressRange, Config};
use ganglion_events::ServerKey;
use ganglion_http::{Authenticator, RateLimiter, Route, RouteInfo, router_from_routes};
use ganglion_master::MasterService;
use ganglion_replication::{
    Bus, CatchUp, InProcessBus, Notifier, Positions, RecentEvents, TypingStore,
    redis::{Follower, RedisBus},
};
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
    #[error("redis: {0}")]
    Redis(String),
    #[error("config: {0}")]
    Config(&'static str),
    #[error("media store: {0}")]
    Media(String),
    #[error("federation: {0}")]
    Federation(String),
}

/// The route table: every endpoint of every role, one line each, with its class. Handlers are
/// one hop away, in the crate the route names.
pub fn route_table() -> Vec<RouteInfo> {
    let mut routes: Vec<RouteInfo> = ganglion_client::routes().iter().map(Route::info).collect();
    routes.extend(ganglion_sync::routes().iter().map(Route::info));
    routes.extend(ganglion_media::routes().iter().map(Route::info));
    routes.extend(ganglion_federation_api::routes().iter().map(Route::info));
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
    let metrics_listener = match config.metrics.listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|source| AppError::Listen { address: address.to_string(), source })?,
        ),
        None => None,
    };
    let config = Arc::new(config);
    let role = config.worker.role;
    let db = Db::connect(&config.database_url(), config.database.max_connections).await?;
    tracing::info!(backend = ?db.backend, role = role.as_str(), "database ready");
    let mut metrics = ganglion_metrics::Metrics::new();
    metrics.identify(role.as_str(), &config.worker.name);

    // One `shutdown` for every server of the process.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stopped| *stopped).await;
        }
    };

    let caches = Arc::new(Caches::new());
    let typing = Arc::new(TypingStore::new());
    let notifier = Notifier::new();
    // The master's run identifies the typing stream's epoch; workers learn it from the master.
    let typing_epoch = if matches!(
        role,
        Role::Sync
            | Role::ClientReader
            | Role::Media
            | Role::FederationReader
            | Role::FederationSender
            | Role::Pusher
    ) {
        0
    } else {
        ganglion_storage::now_ms().max(0) as u64
    };
    let start = initial_token(&db, typing_epoch).await?;
    let positions = Arc::new(Positions::new(start));
    let stream_positions = positions.clone();
    metrics.register_gauge_fn(
        "stream_position",
        "The position this process knows each stream has reached (the master's is where it allocates)",
        "stream",
        move || {
            ganglion_types::StreamKind::all()
                .into_iter()
                .map(|kind| (kind.as_str(), stream_positions.get(kind).0))
                .collect()
        },
    );
    let pool = db.clone();
    metrics.register_gauge_fn(
        "database_connections",
        "Database connections: reads in use and the read pool's size, transactions open and idle",
        "state",
        move || {
            let pool = pool.pool_use();
            vec![
                ("reads_in_use", pool.reads_in_use as i64),
                ("reads_max", pool.reads_max as i64),
                ("transactions_open", pool.transactions_open as i64),
                ("transactions_idle", pool.transactions_idle as i64),
            ]
        },
    );
    let (hit_caches, missed_caches) = (caches.clone(), caches.clone());
    metrics.register_counter_fn("cache_hits", "Lookups a cache answered, by cache", "cache", move || {
        hit_caches.hits_and_misses().into_iter().map(|(cache, (hits, _))| (cache, hits)).collect()
    });
    metrics.register_counter_fn(
        "cache_misses",
        "Lookups a cache could not answer (they went to the database), by cache",
        "cache",
        move || {
            missed_caches.hits_and_misses().into_iter().map(|(cache, (_, misses))| (cache, misses)).collect()
        },
    );
    db.count_in(metrics.database.clone());
    let push_stats = Arc::new(ganglion_pusher::PusherStats::default());
    if matches!(role, Role::All | Role::Master | Role::Pusher) {
        let stats = push_stats.clone();
        metrics.register_counter_fn(
            "pushes",
            "Notifications posted to push gateways, by result (sent: the gateway took it; failed: tried again later; pusher_dropped: the gateway rejected the pushkey)",
            "result",
            move || stats.counts(),
        );
    }
    let metrics = Arc::new(metrics);
    let recent = Arc::new(RecentEvents::new(start));
    let limiter = Arc::new(RateLimiter::new(&config.rate_limits));
    let authenticator: Arc<dyn Authenticator> =
        Arc::new(DbAuthenticator::new(db.clone(), caches.clone(), limiter.clone()));

    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| AppError::Listen { address: config.data_dir.display().to_string(), source })?;
    let key = Arc::new(signing_key(&config).await?);
    let federation = ganglion_federation::Federation::new(&config, key.clone(), db.clone())
        .map_err(|error| AppError::Federation(error.to_string()))?;

    // A cluster without federation senders has its master send (as Synapse's main process does
    // without federation sender workers); SIGHUP may hand the duty over either way.
    let (duty, duty_changes) =
        tokio::sync::watch::channel(ganglion_config::Duty::of(&config, Role::FederationSender));
    if matches!(role, Role::All | Role::Master | Role::FederationSender) {
        tokio::spawn(
            ganglion_federation_sender::Sender::new(
                db.clone(),
                federation.client.clone(),
                duty_changes,
                metrics.federation.clone(),
            )
            .run(),
        );
    }
    // Pushes the same way: the master pushes when the cluster has no pusher instances.
    let (push_duty, push_duty_changes) =
        tokio::sync::watch::channel(ganglion_config::Duty::of(&config, Role::Pusher));
    if matches!(role, Role::All | Role::Master | Role::Pusher) {
        tokio::spawn(
            ganglion_pusher::Pusher::new(
                db.clone(),
                caches.clone(),
                positions.clone(),
                config.clone(),
                push_duty_changes,
                push_stats,
            )
            .run(),
        );
    }
    tokio::spawn(reload_on_sighup(config.clone(), federation.policy.clone(), (duty, push_duty)));

    let mut catch_up: Option<Arc<dyn CatchUp>> = None;
    let mut follower: Option<Arc<Follower>> = None;
    let master: Arc<dyn Master> = match role {
        Role::All | Role::Master => {
            let local = InProcessBus::new(positions.clone(), notifier.clone(), recent.clone());
            let bus: Arc<dyn Bus> = if role == Role::Master {
                Arc::new(
                    RedisBus::start(
                        local,
                        typing.clone(),
                        &config.redis.url,
                        config.redis.stream_maxlen,
                        typing_epoch,
                        Some(metrics.replication.clone()),
                    )
                    .map_err(|e| AppError::Redis(e.to_string()))?,
                )
            } else {
                Arc::new(local)
            };
            let service = MasterService::new(
                db.clone(),
                caches.clone(),
                key.clone(),
                config.clone(),
                bus,
                typing.clone(),
                positions.clone(),
            )
            .await?;
            service.count_in(metrics.master.clone());
            let typing_master = service.clone();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(Duration::from_secs(1));
                loop {
                    interval.tick().await;
                    typing_master.expire_typing().await;
                }
            });
            if let Some(tick) = service.presence_tick() {
                let presence_master = service.clone();
                tokio::spawn(async move {
                    let mut interval = tokio::time::interval(tick);
                    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        interval.tick().await;
                        if let Err(error) = presence_master.expire_presence().await {
                            tracing::warn!(%error, "applying the presence timeouts failed");
                        }
                    }
                });
            }
            if role == Role::Master {
                let address =
                    config.master_grpc().ok_or(AppError::Config("the master needs a grpc address"))?;
                let grpc = TcpListener::bind(address)
                    .await
                    .map_err(|source| AppError::Listen { address: address.to_string(), source })?;
                let served: Arc<dyn Master> = service.clone();
                let stopped = until_stopped();
                let grpc_metrics = metrics.grpc.clone();
                tokio::spawn(async move {
                    if let Err(error) =
                        ganglion_rpc::grpc::serve(served, grpc, Some(grpc_metrics), stopped).await
                    {
                        tracing::error!(%error, "gRPC server failed");
                    }
                });
                tracing::info!(%address, "gRPC listening");
            }
            service
        }
        Role::Sync
        | Role::ClientReader
        | Role::Media
        | Role::FederationReader
        | Role::FederationSender
        | Role::Pusher => {
            let address = config.master_grpc().ok_or(AppError::Config("instance_map has no master"))?;
            let remote = ganglion_rpc::grpc::RemoteMaster::new(
                address,
                Duration::from_millis(config.cluster.rpc_timeout_ms),
            )
            .counting_in(metrics.grpc.clone());
            let hooks =
                Arc::new(cluster::WorkerHooks { master: Arc::new(remote.clone()), caches: caches.clone() });
            let follow = Follower::new(
                db.clone(),
                positions.clone(),
                notifier.clone(),
                recent.clone(),
                typing.clone(),
                hooks,
                config.redis.url.clone(),
                Duration::from_millis(config.cluster.fallback_poll_ms),
            );
            follow.count_in(metrics.replication.clone());
            follow.start();
            let as_catch_up: Arc<dyn CatchUp> = follow.clone();
            catch_up = Some(as_catch_up.clone());
            follower = Some(follow);
            let own_writes = cluster::OwnWrites {
                catch_up: as_catch_up,
                caches: caches.clone(),
                wait: Duration::from_millis(config.cluster.replication_wait_ms),
            };
            Arc::new(remote.reading_own_writes(Arc::new(own_writes)))
        }
    };

    if let Some(listener) = metrics_listener {
        let address = listener.local_addr().map_err(AppError::Serve)?;
        let (ready_db, ready_master) = (db.clone(), master.clone());
        // The embedded default has no Redis.
        let ready_redis = match role {
            Role::All => None,
            _ => Some(
                ganglion_replication::redis::RedisProbe::new(&config.redis.url)
                    .map_err(|e| AppError::Redis(e.to_string()))?,
            ),
        };
        // Ready: the database answers, so do Redis and the master (in process, or over gRPC).
        let ready: ganglion_metrics::ReadinessCheck = Arc::new(move || {
            let (db, master, redis) = (ready_db.clone(), ready_master.clone(), ready_redis.clone());
            Box::pin(async move {
                // Every dependency is asked, so the answer names all that are down.
                let mut down = Vec::new();
                if let Err(error) = db.ping().await {
                    down.push(format!("the database does not answer: {error}"));
                }
                if let Some(Err(error)) = match redis {
                    Some(redis) => Some(redis.check().await),
                    None => None,
                } {
                    down.push(format!("Redis does not answer: {error}"));
                }
                if let Err(error) = master.positions().await {
                    down.push(format!("the master does not answer: {error}"));
                }
                if down.is_empty() { Ok(()) } else { Err(down.join("; ")) }
            })
        });
        let router = ganglion_metrics::router(metrics.clone(), ready);
        let stopped = until_stopped();
        tokio::spawn(async move {
            if let Err(error) = ganglion_metrics::serve(listener, router, stopped).await {
                tracing::error!(%error, "the metrics listener stopped");
            }
        });
        tracing::info!(url = %ganglion_metrics::describe(address), "metrics listening");
    }

    let mut routes: Vec<Route<()>> = Vec::new();
    let syncing = ganglion_sync::SyncingDevices::new(master.clone(), &config.presence);
    let state = ClientState::new(
        db.clone(),
        caches.clone(),
        master.clone(),
        authenticator.clone(),
        config.clone(),
        positions.clone(),
        typing.clone(),
        federation.clone(),
    );
    routes.extend(
        ganglion_client::routes()
            .into_iter()
            .filter(|r| role.serves(r.class))
            .map(|r| r.with_state(state.clone())),
    );
    let sync_memory = Arc::new(ganglion_sync::SyncMemory::default());
    if role.serves(EndpointClass::Sync) {
        tokio::spawn(sync_memory.stats.clone().log_every(Duration::from_secs(60)));
    }
    let state = SyncState {
        db: db.clone(),
        caches: caches.clone(),
        authenticator: authenticator.clone(),
        config: config.clone(),
        positions: positions.clone(),
        notifier: notifier.clone(),
        typing: typing.clone(),
        recent: recent.clone(),
        memory: sync_memory.clone(),
        catch_up,
        syncing,
        metrics: metrics.sync.clone(),
    };
    routes.extend(
        ganglion_sync::routes()
            .into_iter()
            .filter(|r| role.serves(r.class))
            .map(|r| r.with_state(state.clone())),
    );

    let mut media_state = None;
    if role.serves(EndpointClass::Media) {
        let store = match &config.media.s3 {
            Some(s3) => {
                let store = ganglion_media::MediaStore::s3(s3);
                tracing::info!(bucket = %s3.bucket, endpoint = ?s3.endpoint, "media store: S3");
                store
            }
            None => {
                let directory = config.media.directory(&config.data_dir);
                tracing::info!(directory = %directory.display(), "media store: directory");
                ganglion_media::MediaStore::directory(&directory)
            }
        }
        .map_err(|error| AppError::Media(error.to_string()))?;
        let state = ganglion_media::MediaState {
            db: db.clone(),
            authenticator: authenticator.clone(),
            config: config.clone(),
            store: Arc::new(store),
            thumbnailers: Arc::new(tokio::sync::Semaphore::new(config.media.thumbnail_concurrency as usize)),
            scanner: config.media.clamd.as_deref().and_then(ganglion_media::scan::ClamdAddress::parse).map(
                |address| {
                    Arc::new(ganglion_media::scan::Clamd::new(
                        address,
                        Duration::from_millis(config.media.scan_timeout_ms),
                    ))
                },
            ),
            scanner_key: Arc::default(),
            metrics: metrics.media.clone(),
            federation: Some(federation.clone()),
        };
        media_state = Some(state.clone());
        tokio::spawn(ganglion_media::housekeeping(db.clone(), state.store.clone()));
        routes.extend(
            ganglion_media::routes()
                .into_iter()
                .filter(|r| role.serves(r.class))
                .map(|r| r.with_state(state.clone())),
        );
    }

    let federation_state = ganglion_federation_api::FederationState {
        db: db.clone(),
        config: config.clone(),
        key: key.clone(),
        federation: federation.clone(),
        master,
        metrics: metrics.federation.clone(),
        caches: caches.clone(),
    };
    routes.extend(
        ganglion_federation_api::routes()
            .into_iter()
            .filter(|r| role.serves(r.class))
            .map(|r| r.with_state(federation_state.clone())),
    );
    if let (Role::All, Some(address)) = (role, config.federation.listen) {
        // Other servers reach the federation classes over TLS here; the client API stays on
        // `http.listen`. In a cluster the load balancer listens there and ends TLS.
        let tls = ganglion_federation::tls::server_config(&config)
            .map_err(|error| AppError::Federation(error.to_string()))?;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| AppError::Listen { address: address.to_string(), source })?;
        let mut federation_routes: Vec<Route<()>> = ganglion_federation_api::routes()
            .into_iter()
            .filter(|r| role.serves(r.class))
            .map(|r| r.with_state(federation_state.clone()))
            .collect();
        if let Some(media_state) = &media_state {
            federation_routes.extend(
                ganglion_media::routes()
                    .into_iter()
                    .filter(|r| r.class == EndpointClass::FederationMedia)
                    .map(|r| r.with_state(media_state.clone())),
            );
        }
        let router =
            router_from_routes(federation_routes, config.http.max_body_bytes, Some(metrics.http.clone()));
        let stopped = until_stopped();
        tokio::spawn(async move {
            if let Err(error) = ganglion_http::serve_tls(listener, tls, router, stopped).await {
                tracing::error!(%error, "the federation listener stopped");
            }
        });
        tracing::info!(%address, "federation listening (TLS)");
    }

    let instance = HeaderValue::from_str(&format!("{}/{}", role.as_str(), config.worker.name))
        .unwrap_or(HeaderValue::from_static("ganglion"));
    let mut router: Router =
        router_from_routes(routes, config.http.max_body_bytes, Some(metrics.http.clone()));
    if let Some(follower) = follower {
        router = router.route(
            "/_ganglion/v1/replication",
            axum::routing::get(move || replication_status(follower.clone(), positions.clone())),
        );
    }
    let trusted_proxies = Arc::new(config.http.trusted_proxies.clone());
    let router = router.layer(axum::middleware::from_fn(move |mut request: Request, next: Next| {
        let instance = instance.clone();
        let trusted_proxies = trusted_proxies.clone();
        async move {
            replace_peer_with_forwarded_client(&mut request, &trusted_proxies);
            // Continue the caller's trace, or start one; gRPC calls made for this request carry it.
            let caller =
                request.headers().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let mut response: Response = if ganglion_telemetry::exporting() {
                let route = request
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or_else(|| request.uri().path().to_owned(), |path| path.as_str().to_owned());
                let span = tracing::info_span!(
                    "http.request",
                    otel.name = %format!("{} {route}", request.method()),
                    otel.kind = "server",
                    http.request.method = %request.method(),
                    http.route = %route,
                    http.response.status_code = tracing::field::Empty,
                );
                if let Some(caller) = &caller {
                    ganglion_telemetry::continue_trace(&span, caller);
                }
                let traceparent = ganglion_telemetry::traceparent(&span)
                    .unwrap_or_else(ganglion_rpc::trace::new_traceparent);
                let response =
                    ganglion_rpc::trace::scope(traceparent, next.run(request)).instrument(span.clone()).await;
                span.record("http.response.status_code", response.status().as_u16());
                response
            } else {
                let traceparent = caller
                    .as_deref()
                    .map(ganglion_rpc::trace::child_of)
                    .unwrap_or_else(ganglion_rpc::trace::new_traceparent);
                ganglion_rpc::trace::scope(traceparent, next.run(request)).await
            };
            response.headers_mut().insert("x-ganglion-instance", instance);
            response
        }
    }));
    let address = config.http.listen;
    tracing::info!(%address, role = role.as_str(), server_name = %config.server_name, "client API listening");
    on_ready(address);
    ganglion_http::serve(listener, router, until_stopped()).await.map_err(AppError::Serve)
}

/// On SIGHUP, reads the config file again and takes what can change without a restart: the
/// servers this one federates with, which process sends to which of them (the federation
/// senders of `instance_map`) and which pushes for which users (its pushers). A config that no
/// longer loads changes nothing.
async fn reload_on_sighup(
    config: Arc<Config>,
    policy: Arc<ganglion_federation::ServerPolicy>,
    (duty, push_duty): (
        tokio::sync::watch::Sender<ganglion_config::Duty>,
        tokio::sync::watch::Sender<ganglion_config::Duty>,
    ),
) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hangups.recv().await.is_some() {
        let instance = (config.worker.role != Role::All).then_some(config.worker.name.as_str());
        match Config::load_instance(config.source.as_deref(), instance) {
            Ok(reloaded) => {
                policy.reload(&reloaded.federation);
                let now = ganglion_config::Duty::of(&reloaded, Role::FederationSender);
                if duty.send_replace(now) != now {
                    tracing::info!(duty = ?now, "SIGHUP: this process's federation destinations changed");
                }
                let now = ganglion_config::Duty::of(&reloaded, Role::Pusher);
                if push_duty.send_replace(now) != now {
                    tracing::info!(duty = ?now, "SIGHUP: the users this process pushes for changed");
                }
                tracing::info!(
                    allowed_servers = reloaded.federation.allowed_servers.len(),
                    blocked_servers = reloaded.federation.blocked_servers.len(),
                    "SIGHUP: reloaded the servers this one federates with"
                );
            }
            Err(error) => tracing::error!(%error, "SIGHUP: the config does not load; nothing changed"),
        }
    }
}

/// The server's signing key. The master (or `all`) creates it on first start; other processes
/// of a cluster read the same file, waiting a little for a master that is starting at once.
async fn signing_key(config: &Config) -> Result<ServerKey, AppError> {
    let path = config.federation.signing_key_path(&config.data_dir);
    if matches!(config.worker.role, Role::All | Role::Master) {
        return Ok(ServerKey::load_or_generate(&config.server_name, &path)?);
    }
    for _ in 0..300 {
        if path.exists() {
            // A key the master is writing right now may be incomplete: read it again shortly.
            if let Ok(key) = ServerKey::load_or_generate(&config.server_name, &path) {
                return Ok(key);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(AppError::Federation(format!(
        "the signing key {} does not exist: every process of a cluster reads the master's \
         (federation.signing_key)",
        path.display()
    )))
}

/// Behind a trusted load balancer, the client is the one it names, not the balancer itself:
/// replaces the peer address that rate limits and UIA read.
fn replace_peer_with_forwarded_client(request: &mut Request, trusted_proxies: &[AddressRange]) {
    use axum::extract::ConnectInfo;
    let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<std::net::SocketAddr>>().copied()
    else {
        return;
    };
    let client = ganglion_http::forwarded_client(peer.ip(), request.headers(), trusted_proxies);
    if client != peer.ip() {
        request.extensions_mut().insert(ConnectInfo(std::net::SocketAddr::new(client, peer.port())));
    }
}

/// `GET /_ganglion/v1/replication` on a worker: how it follows the master, for operators and
/// the load tool. Lag percentiles cover the entries since the previous call.
async fn replication_status(
    follower: Arc<Follower>,
    positions: Arc<Positions>,
) -> axum::Json<serde_json::Value> {
    let lag = follower.take_lag_stats();
    axum::Json(serde_json::json!({
        "following_redis": follower.is_following_redis(),
        "positions": positions.current().to_string(),
        "lag_ms": { "samples": lag.samples, "p50": lag.p50_ms, "p99": lag.p99_ms, "max": lag.max_ms },
    }))
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
        to_device: StreamPosition(ganglion_storage::to_device::max_to_device_stream_pos(&mut conn).await?),
        device_lists: StreamPosition(ganglion_storage::keys::max_device_list_stream_pos(&mut conn).await?),
        presence: StreamPosition(ganglion_storage::presence::max_presence_stream_pos(&mut conn).await?),
    })
}

/// The newest `limit` reports users filed (`ganglion reports`), newest first, as JSON objects.
pub async fn newest_reports(config: &Config, limit: i64) -> Result<Vec<serde_json::Value>, AppError> {
    let db = Db::connect(&config.database_url(), 2).await?;
    let mut conn = db.conn().await?;
    let reports = ganglion_storage::reports::newest_reports(&mut conn, limit).await?;
    Ok(reports
        .into_iter()
        .map(|report| {
            serde_json::json!({
                "report_id": report.report_id,
                "kind": report.kind,
                "reporter": report.reporter,
                "room_id": report.room_id,
                "event_id": report.event_id,
                "user_id": report.user_id,
                "reason": report.reason,
                "score": report.score,
                "received_ts": report.received_ts,
            })
        })
        .collect())
}
