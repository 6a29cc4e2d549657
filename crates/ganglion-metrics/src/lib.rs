//! Prometheus metrics, all named `ganglion_*`: one registry per process, served in the
//! Prometheus text format on a listener of its own (`metrics.listen`, or the instance's `metrics`
//! address), off the client API, beside `/health` (the process runs) and `/ready` (it can serve:
//! its dependencies answer).

mod gauges;
mod process;

use std::{borrow::Cow, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, http::StatusCode, http::header, response::IntoResponse, routing::get};
use futures_util::future::BoxFuture;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// The labels of one answered request: its route as registered (a path template, so the label
/// set stays bounded), the route's endpoint class, the method and the status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub class: &'static str,
    pub route: Cow<'static, str>,
    pub method: &'static str,
    pub status: u16,
}

/// The latency histogram's labels: the route and its class.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub class: &'static str,
    pub route: Cow<'static, str>,
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Client API requests, by route.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
}

impl HttpMetrics {
    /// The handles of one route, resolved once when the route is registered, so that a request
    /// neither hashes its labels nor takes the families' locks.
    pub fn route(&self, class: &'static str, route: Cow<'static, str>, method: &'static str) -> RouteMetrics {
        RouteMetrics {
            requests: self.requests.clone(),
            latencies: self.latency.clone(),
            labels: RequestLabels { class, route, method, status: 0 },
            latency: std::sync::OnceLock::new(),
            by_status: std::sync::RwLock::new(Vec::new()),
        }
    }
}

/// One route's request counters (per status) and latency histogram, each made on the route's
/// first request: routes never asked for export nothing.
#[derive(Debug)]
pub struct RouteMetrics {
    requests: Family<RequestLabels, Counter>,
    latencies: LatencyFamily,
    labels: RequestLabels,
    latency: std::sync::OnceLock<Histogram>,
    by_status: std::sync::RwLock<Vec<(u16, Counter)>>,
}

impl RouteMetrics {
    /// Counts one answered request and its latency.
    pub fn observe(&self, status: u16, took: Duration) {
        let latency = self.latency.get_or_init(|| {
            let labels = RouteLabels { class: self.labels.class, route: self.labels.route.clone() };
            self.latencies.get_or_create(&labels).clone()
        });
        latency.observe(took.as_secs_f64());
        let known = {
            let by_status = self.by_status.read().unwrap_or_else(|e| e.into_inner());
            by_status.iter().find(|(known, _)| *known == status).map(|(_, counter)| counter.clone())
        };
        let counter = known.unwrap_or_else(|| {
            let counter =
                self.requests.get_or_create(&RequestLabels { status, ..self.labels.clone() }).clone();
            self.by_status.write().unwrap_or_else(|e| e.into_inner()).push((status, counter.clone()));
            counter
        });
        counter.inc();
    }
}

/// The media repository's traffic and antivirus verdicts.
#[derive(Debug, Clone, Default)]
pub struct MediaMetrics {
    bytes: Family<DirectionLabels, Counter>,
    scans: Family<VerdictLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
}

/// What a scan found, or that it could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanOutcome {
    Clean,
    Infected,
    Failed,
}

impl MediaMetrics {
    /// Bytes of an upload stored.
    pub fn received(&self, bytes: u64) {
        self.bytes.get_or_create(&DirectionLabels { direction: "in" }).inc_by(bytes);
    }

    /// Bytes of a file (or thumbnail) served.
    pub fn served(&self, bytes: u64) {
        self.bytes.get_or_create(&DirectionLabels { direction: "out" }).inc_by(bytes);
    }

    pub fn scanned(&self, outcome: ScanOutcome) {
        let verdict = match outcome {
            ScanOutcome::Clean => "clean",
            ScanOutcome::Infected => "infected",
            ScanOutcome::Failed => "failed",
        };
        self.scans.get_or_create(&VerdictLabels { verdict }).inc();
    }
}

/// `/sync` long-polls: how many wait now, how often one is woken by news, and how long a woken
/// one takes to answer.
#[derive(Debug, Clone)]
pub struct SyncMetrics {
    waiting: prometheus_client::metrics::gauge::Gauge,
    wakeups: Counter,
    answers: Histogram,
}

impl Default for SyncMetrics {
    fn default() -> SyncMetrics {
        SyncMetrics { waiting: Default::default(), wakeups: Counter::default(), answers: latency_histogram() }
    }
}

/// Counts a long-poll as waiting until dropped.
pub struct Waiting(prometheus_client::metrics::gauge::Gauge);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl SyncMetrics {
    pub fn waiting(&self) -> Waiting {
        self.waiting.inc();
        Waiting(self.waiting.clone())
    }

    /// A waiting long-poll was woken by a row for its user or rooms (not by its timeout).
    pub fn woken(&self) {
        self.wakeups.inc();
    }

    /// A woken long-poll answered with news, `took` after it was woken.
    pub fn answered(&self, took: Duration) {
        self.answers.observe(took.as_secs_f64());
    }
}

/// A worker's following of the master's streams: the delay from the master's publish to this
/// process reading an entry from Redis, connections to Redis, catch-ups from the database.
#[derive(Debug, Clone)]
pub struct ReplicationMetrics {
    lag: Family<StreamLabels, Histogram, fn() -> Histogram>,
    redis_connects: Counter,
    redis_dropped: Counter,
    catch_ups: Counter,
}

impl Default for ReplicationMetrics {
    fn default() -> ReplicationMetrics {
        ReplicationMetrics {
            lag: Family::new_with_constructor(lag_histogram as fn() -> Histogram),
            redis_connects: Counter::default(),
            redis_dropped: Counter::default(),
            catch_ups: Counter::default(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: &'static str,
}

fn lag_histogram() -> Histogram {
    // 0.1 ms to about 3 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 15))
}

impl ReplicationMetrics {
    /// The delay of one entry of `stream`.
    pub fn lag(&self, stream: &'static str, seconds: f64) {
        self.lag.get_or_create(&StreamLabels { stream }).observe(seconds);
    }

    /// A connection to Redis made (the first, or after losing it).
    pub fn redis_connected(&self) {
        self.redis_connects.inc();
    }

    /// The master: stream entries that never reached Redis (it was down, or the queue was full);
    /// workers read those rows from the database instead.
    pub fn redis_dropped(&self, entries: u64) {
        self.redis_dropped.inc_by(entries);
    }

    /// Rows read from the database instead of Redis (on connecting, and while Redis is down).
    pub fn caught_up(&self) {
        self.catch_ups.inc();
    }
}

/// gRPC calls between workers and the master, by method: a worker's calls from its side, the
/// master's from its own.
#[derive(Debug, Clone)]
pub struct GrpcMetrics {
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    served: Family<CallLabels, Counter>,
    serving: Family<MethodLabels, Histogram, fn() -> Histogram>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

impl GrpcMetrics {
    /// Counts one call of `method`, answered (`ok`) or not, and its latency.
    pub fn observe(&self, method: &'static str, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.calls.get_or_create(&CallLabels { method, outcome }).inc();
        self.latency.get_or_create(&MethodLabels { method }).observe(took.as_secs_f64());
    }

    /// The master: counts one call of `method` it answered, by outcome (`ok`, `refused` for a
    /// Matrix error the caller is told, `error` for a failure of the master), and its latency.
    pub fn served(&self, method: &'static str, outcome: &'static str, took: Duration) {
        self.served.get_or_create(&CallLabels { method, outcome }).inc();
        self.serving.get_or_create(&MethodLabels { method }).observe(took.as_secs_f64());
    }
}

/// The master's write path: events persisted, events refused, and its write batches.
#[derive(Debug, Clone)]
pub struct MasterMetrics {
    persisted: Counter,
    rejected: Family<ReasonLabels, Counter>,
    batches: Histogram,
    resolutions: Histogram,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

impl Default for MasterMetrics {
    fn default() -> MasterMetrics {
        MasterMetrics {
            persisted: Counter::default(),
            rejected: Family::default(),
            batches: latency_histogram(),
            resolutions: latency_histogram(),
        }
    }
}

impl MasterMetrics {
    /// Events committed by one write batch, and how long the batch held the writer.
    pub fn committed(&self, events: u64, took: Duration) {
        self.persisted.inc_by(events);
        self.batches.observe(took.as_secs_f64());
    }

    /// An event refused before persisting; `reason` is its error class (`forbidden` for the auth
    /// rules, `bad_json`, `too_large`, ...).
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A state resolution computed (not one answered from the memo).
    pub fn resolved(&self, took: Duration) {
        self.resolutions.observe(took.as_secs_f64());
    }
}

/// Federation: transactions sent and received, PDUs received by outcome, and what the senders
/// have queued. Labels have a few fixed values, never a server name: a cluster federating with
/// thousands of servers must not make thousands of series. Every label value is created at
/// start, at zero, so a process that has not federated yet still answers the panels.
#[derive(Debug, Clone)]
pub struct FederationMetrics {
    transactions: Family<TransactionLabels, Counter>,
    pdus_received: Family<OutcomeLabels, Counter>,
    sent: Family<KindLabels, Counter>,
    destinations: Family<DestinationLabels, prometheus_client::metrics::gauge::Gauge>,
    send_latency: Histogram,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransactionLabels {
    direction: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    state: &'static str,
}

/// How a transaction went: taken (`ok`), refused for good (`refused`: a 4xx), or to be retried
/// (`failed`: unreachable, 5xx, 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionResult {
    Ok,
    Refused,
    Failed,
}

impl TransactionResult {
    fn as_str(self) -> &'static str {
        match self {
            TransactionResult::Ok => "ok",
            TransactionResult::Refused => "refused",
            TransactionResult::Failed => "failed",
        }
    }
}

/// What became of a PDU another server sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PduOutcome {
    Accepted,
    /// Failed a check (format, signatures, hash, auth against its auth events).
    Rejected,
    /// Allowed by its own auth events but not by the room's current state: not applied.
    SoftFailed,
}

impl Default for FederationMetrics {
    fn default() -> FederationMetrics {
        let metrics = FederationMetrics {
            transactions: Family::default(),
            pdus_received: Family::default(),
            sent: Family::default(),
            destinations: Family::default(),
            send_latency: latency_histogram(),
        };
        for direction in ["in", "out"] {
            for result in [TransactionResult::Ok, TransactionResult::Refused, TransactionResult::Failed] {
                let _ = metrics
                    .transactions
                    .get_or_create(&TransactionLabels { direction, result: result.as_str() });
            }
        }
        for outcome in ["accepted", "rejected", "soft_failed"] {
            let _ = metrics.pdus_received.get_or_create(&OutcomeLabels { outcome });
        }
        for kind in ["pdu", "edu"] {
            let _ = metrics.sent.get_or_create(&KindLabels { kind });
        }
        for state in ["queued", "backing_off"] {
            let _ = metrics.destinations.get_or_create(&DestinationLabels { state });
        }
        metrics
    }
}

impl FederationMetrics {
    /// A transaction this process sent, with what it carried and how long the destination took.
    pub fn sent(&self, result: TransactionResult, pdus: u64, edus: u64, took: Duration) {
        self.transactions
            .get_or_create(&TransactionLabels { direction: "out", result: result.as_str() })
            .inc();
        self.send_latency.observe(took.as_secs_f64());
        if result == TransactionResult::Ok {
            self.sent.get_or_create(&KindLabels { kind: "pdu" }).inc_by(pdus);
            self.sent.get_or_create(&KindLabels { kind: "edu" }).inc_by(edus);
        }
    }

    /// A transaction another server sent: applied (`Ok`), refused as a whole (`Refused`), or
    /// failed on our side (`Failed`).
    pub fn received(&self, result: TransactionResult) {
        self.transactions
            .get_or_create(&TransactionLabels { direction: "in", result: result.as_str() })
            .inc();
    }

    pub fn pdu_received(&self, outcome: PduOutcome) {
        let outcome = match outcome {
            PduOutcome::Accepted => "accepted",
            PduOutcome::Rejected => "rejected",
            PduOutcome::SoftFailed => "soft_failed",
        };
        self.pdus_received.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// A sender's destinations after a pass over its share of the outbox: with something
    /// queued, and waiting out a back-off.
    pub fn destinations(&self, queued: usize, backing_off: usize) {
        self.destinations.get_or_create(&DestinationLabels { state: "queued" }).set(queued as i64);
        self.destinations.get_or_create(&DestinationLabels { state: "backing_off" }).set(backing_off as i64);
    }
}

/// Database connections: how long a query waits for one, and how long it is held (a request's
/// reads, a write transaction from begin to commit or rollback). The four histograms are resolved
/// once: every connection taken records into two of them.
#[derive(Debug, Clone)]
pub struct DatabaseMetrics {
    wait: Family<PoolLabels, Histogram, fn() -> Histogram>,
    held: Family<PoolLabels, Histogram, fn() -> Histogram>,
    read_wait: Histogram,
    transaction_wait: Histogram,
    read_held: Histogram,
    transaction_held: Histogram,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: &'static str,
}

impl DatabaseMetrics {
    fn new() -> DatabaseMetrics {
        let wait = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let held = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let of = |family: &Family<PoolLabels, Histogram, fn() -> Histogram>, pool| {
            family.get_or_create(&PoolLabels { pool }).clone()
        };
        DatabaseMetrics {
            read_wait: of(&wait, "read"),
            transaction_wait: of(&wait, "transaction"),
            read_held: of(&held, "read"),
            transaction_held: of(&held, "transaction"),
            wait,
            held,
        }
    }

    /// Time to get a read connection (`transaction`: to begin a transaction).
    pub fn waited(&self, transaction: bool, took: Duration) {
        let histogram = if transaction { &self.transaction_wait } else { &self.read_wait };
        histogram.observe(took.as_secs_f64());
    }

    /// How long a read connection (`transaction`: a transaction) was used.
    pub fn held(&self, transaction: bool, took: Duration) {
        let histogram = if transaction { &self.transaction_held } else { &self.read_held };
        histogram.observe(took.as_secs_f64());
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    version: &'static str,
    role: &'static str,
    name: String,
}

/// Every metric of a process.
pub struct Metrics {
    registry: Registry,
    info: Family<InfoLabels, prometheus_client::metrics::gauge::Gauge>,
    pub http: Arc<HttpMetrics>,
    pub media: Arc<MediaMetrics>,
    pub sync: Arc<SyncMetrics>,
    pub replication: Arc<ReplicationMetrics>,
    pub grpc: Arc<GrpcMetrics>,
    pub master: Arc<MasterMetrics>,
    pub database: Arc<DatabaseMetrics>,
    pub federation: Arc<FederationMetrics>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 33 s: a send, a long-poll and a large upload all land inside.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 17))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ganglion");
        let info = Family::<InfoLabels, prometheus_client::metrics::gauge::Gauge>::default();
        registry.register(
            "build_info",
            "Always 1: the process's version, role and instance name, to select processes by role (`* on(instance) group_left(role) ganglion_build_info`)",
            info.clone(),
        );
        let http = HttpMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        };
        registry.register(
            "http_requests",
            "Client API requests answered, by endpoint class, route, method and status",
            http.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Client API request latency, by endpoint class and route",
            http.latency.clone(),
        );
        registry.register_collector(Box::new(process::ProcessCollector));
        let media = MediaMetrics::default();
        registry.register(
            "media_bytes",
            "Media bytes stored from uploads (direction in) and served (direction out)",
            media.bytes.clone(),
        );
        registry.register(
            "media_scans",
            "Antivirus scans by verdict: clean, infected, or failed (the scanner did not answer)",
            media.scans.clone(),
        );
        let sync = SyncMetrics::default();
        registry.register("sync_long_polls", "/sync requests waiting for news now", sync.waiting.clone());
        registry.register(
            "sync_wakeups",
            "Waiting /sync requests woken by a row for their user or rooms",
            sync.wakeups.clone(),
        );
        registry.register(
            "sync_wake_to_answer_seconds",
            "From news waking a waiting /sync to its answer being ready (what a user waits beyond replication)",
            sync.answers.clone(),
        );
        let replication = ReplicationMetrics::default();
        registry.register(
            "replication_lag_seconds",
            "Workers: from the master's publish of a stream entry to this process reading it from Redis, by stream",
            replication.lag.clone(),
        );
        registry.register(
            "redis_connects",
            "Connections made to Redis (the first, then reconnections): workers follow the streams, the master publishes",
            replication.redis_connects.clone(),
        );
        registry.register(
            "redis_entries_dropped",
            "The master: stream entries not published to Redis (it was down, or the queue full); workers read them from the database",
            replication.redis_dropped.clone(),
        );
        registry.register(
            "replication_catch_ups",
            "Workers: catch-ups from the database (on connecting to Redis, and while it is down)",
            replication.catch_ups.clone(),
        );
        let grpc = GrpcMetrics {
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            served: Family::default(),
            serving: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        };
        registry.register(
            "grpc_client_calls",
            "Workers: calls to the master by method, answered (ok) or failed (error: refused, unavailable, timed out)",
            grpc.calls.clone(),
        );
        registry.register(
            "grpc_client_duration_seconds",
            "Workers: latency of calls to the master by method",
            grpc.latency.clone(),
        );
        registry.register(
            "grpc_server_calls",
            "The master: calls answered by method and outcome (ok, refused: a Matrix error for the caller, error: the master failed)",
            grpc.served.clone(),
        );
        registry.register(
            "grpc_server_duration_seconds",
            "The master: time to answer a call, by method",
            grpc.serving.clone(),
        );
        let master = MasterMetrics::default();
        registry.register(
            "events_persisted",
            "The master: events committed to the database",
            master.persisted.clone(),
        );
        registry.register(
            "events_rejected",
            "The master: events refused before persisting, by reason (forbidden: the auth rules)",
            master.rejected.clone(),
        );
        registry.register(
            "write_batch_duration_seconds",
            "The master: how long each write batch held the writer, from taking it to commit",
            master.batches.clone(),
        );
        registry.register(
            "state_resolution_duration_seconds",
            "The master: time to resolve the states of a room's branches (forks of its event graph), memoised ones not counted",
            master.resolutions.clone(),
        );
        let database = DatabaseMetrics::new();
        registry.register(
            "database_wait_seconds",
            "Time to get a database connection, by pool (read, transaction)",
            database.wait.clone(),
        );
        registry.register(
            "database_use_seconds",
            "How long a database connection was used: a request's reads (read) or a transaction from begin to end (transaction)",
            database.held.clone(),
        );
        let federation = FederationMetrics::default();
        registry.register(
            "federation_transactions",
            "Federation transactions by direction (out: sent by this process's federation sender, in: received) and result (ok, refused, failed)",
            federation.transactions.clone(),
        );
        registry.register(
            "federation_pdus_received",
            "PDUs other servers sent, by outcome: accepted, rejected (a check failed), soft_failed (refused by the room's current state)",
            federation.pdus_received.clone(),
        );
        registry.register(
            "federation_sent",
            "PDUs and EDUs (kind) in transactions other servers took from this process",
            federation.sent.clone(),
        );
        registry.register(
            "federation_destinations",
            "Destinations of this process's federation sender with something queued (queued) and waiting out a back-off (backing_off)",
            federation.destinations.clone(),
        );
        registry.register(
            "federation_send_duration_seconds",
            "How long a destination took to answer a transaction this process sent",
            federation.send_latency.clone(),
        );
        Metrics {
            registry,
            info,
            http: Arc::new(http),
            media: Arc::new(media),
            sync: Arc::new(sync),
            replication: Arc::new(replication),
            grpc: Arc::new(grpc),
            master: Arc::new(master),
            database: Arc::new(database),
            federation: Arc::new(federation),
        }
    }

    /// Names the process in `ganglion_build_info`: its role and instance name.
    pub fn identify(&self, role: &'static str, name: &str) {
        let labels = InfoLabels { version: env!("CARGO_PKG_VERSION"), role, name: name.to_owned() };
        self.info.get_or_create(&labels).set(1);
    }

    /// Counters read on each scrape: `values` gives each `label` value's count (a cache's hits).
    pub fn register_counter_fn(
        &mut self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: impl Fn() -> Vec<(&'static str, u64)> + Send + Sync + 'static,
    ) {
        self.registry.register_collector(Box::new(gauges::CounterFn {
            name,
            help,
            label,
            values: Box::new(values),
        }));
    }

    /// A gauge read on each scrape: `values` gives each `label` value's reading (a stream's
    /// position, say).
    pub fn register_gauge_fn(
        &mut self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: impl Fn() -> Vec<(&'static str, i64)> + Send + Sync + 'static,
    ) {
        self.registry.register_collector(Box::new(gauges::GaugeFn {
            name,
            help,
            label,
            values: Box::new(values),
        }));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Whether the process can serve: `Err` names what does not answer.
pub type ReadinessCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The metrics listener's routes: `/metrics`, `/health`, `/ready`.
pub fn router(metrics: Arc<Metrics>, ready: ReadinessCheck) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, prometheus_client::encoding::prometheus_text::CONTENT_TYPE)],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/health", get(|| async { "ok\n" }))
        .route(
            "/ready",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready().await {
                        Ok(()) => (StatusCode::OK, "ready\n".to_owned()).into_response(),
                        Err(problem) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {problem}\n"))
                            .into_response(),
                    }
                }
            }),
        )
}

/// Serves the metrics listener on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

/// The address a metrics listener is bound to, for the log.
pub fn describe(address: SocketAddr) -> String {
    format!("http://{address}/metrics")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_the_process_are_exported() {
        let metrics = Metrics::new();
        let route: Cow<'static, str> = Cow::Borrowed("/_matrix/client/v3/sync");
        metrics.http.route("sync", route, "GET").observe(200, Duration::from_millis(3));
        let text = metrics.render();
        assert!(
            text.contains(
                r#"ganglion_http_requests_total{class="sync",route="/_matrix/client/v3/sync",method="GET",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("ganglion_http_request_duration_seconds_bucket{"), "{text}");
        for name in [
            "ganglion_process_resident_memory_bytes",
            "ganglion_process_cpu_seconds_total",
            "ganglion_process_open_fds",
        ] {
            assert!(text.lines().any(|line| line.starts_with(name)), "{name} missing:\n{text}");
        }
    }
}
