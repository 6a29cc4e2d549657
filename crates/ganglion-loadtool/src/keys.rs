//! The keys workloads: `--senders` clients, users of their own, call `/keys/claim` (keys-claim)
//! or `/keys/query` (keys-query) in closed loops, against `--users` x `--devices-per-user`
//! devices that each published one-time keys and a fallback key in setup. Each request names the
//! next `--keys-per-request` devices (claim) or users (query) in turn, so every device is asked
//! for keys equally often.
//!
//! In keys-claim every device tops its one-time keys up once fewer than [`LOW_WATER`] are left,
//! as a client does when `/sync` reports a low count; the claimers tell it from what they claim,
//! and the uploads are measured too. A claim that finds no one-time key left gets the fallback
//! key, and the report counts those.
//!
//! The devices upload no device keys (signing them would need ed25519, which the load tool does
//! without), so `/keys/query` answers name the users but list no devices: it measures the
//! lookups, not the serialising of keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, watch};

use crate::backoff::Backoff;
use crate::cli::{Args, Workload};
use crate::clock;
use crate::e2ee::{self, Noise, ONE_TIME_KEY_ALGORITHM};
use crate::matrix::{Api, KeysEndpoint, Reply, Session};
use crate::report::Window;
use crate::report::keys::{ClaimTally, KeysMeasurements, KeysReport};
use crate::run::{Progress, REQUEST_TIMEOUT, Snapshot, run_id, sample_rss, usage};
use crate::sender::{SendRecord, SenderOutcome, sleep_unless_stopped};
use crate::server::Server;
use crate::setup::Setup;

/// A device tops up once fewer one-time keys than this are left on the server.
const LOW_WATER: i64 = 50;
/// Keys per upload, in setup and per top-up: the most the server takes in one request.
const KEYS_PER_UPLOAD: u64 = 100;
/// Pause after a failed request, so that a broken server is not spun on.
const FAILURE_PAUSE: Duration = Duration::from_millis(50);
/// How often progress goes to stderr.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// A device that published keys.
struct Device {
    session: Session,
    /// One-time keys the server holds for it, as far as the claims tell.
    keys_left: AtomicI64,
    /// The next one-time key's number.
    next_key: AtomicU64,
    /// Woken when `keys_left` falls below [`LOW_WATER`].
    wake: Notify,
}

#[derive(Deserialize)]
struct UploadAnswer {
    #[serde(default)]
    one_time_key_counts: Map<String, Value>,
}

impl UploadAnswer {
    fn count(&self) -> i64 {
        self.one_time_key_counts.get(ONE_TIME_KEY_ALGORITHM).and_then(Value::as_i64).unwrap_or(0)
    }
}

#[derive(Deserialize)]
struct ClaimAnswer {
    /// user → device → key id → key.
    #[serde(default)]
    one_time_keys: Map<String, Value>,
}

pub async fn run(args: &Args, server: Server, progress: &Progress) -> anyhow::Result<()> {
    let setup_concurrency = args.setup_concurrency as usize;
    let setup_api = Api::new(&server.base_url, setup_concurrency, REQUEST_TIMEOUT)?;
    setup_api.versions().await.context("the server does not answer /_matrix/client/versions")?;

    // Setup: devices that publish keys, and the clients.
    let setup_started = Instant::now();
    let run_id = run_id();
    let setup_rate_limited = AtomicU64::new(0);
    let setup = Setup {
        api: &setup_api,
        run_id: &run_id,
        concurrency: setup_concurrency,
        rate_limited: &setup_rate_limited,
    };
    let (users, devices_per_user) = (args.users as usize, args.devices_per_user() as usize);
    progress.say(&format!(
        "registering {users} users with {devices_per_user} devices each, and {} clients (run {run_id})",
        args.senders
    ));
    let registered = setup.register("", users).await?;
    let user_ids: Arc<[String]> = registered.iter().map(|session| session.user_id.clone()).collect();
    let sessions = setup.devices("", registered, devices_per_user).await?;
    let clients = setup.register("client", args.senders as usize).await?;
    progress.say(&format!(
        "{} devices publish {KEYS_PER_UPLOAD} one-time keys and a fallback key",
        sessions.len()
    ));
    let devices: Arc<[Device]> = stream::iter(sessions.into_iter().enumerate())
        .map(|(index, session)| {
            let setup = &setup;
            async move {
                let mut noise = Noise::new(index as u64);
                let body = json!({
                    "one_time_keys": e2ee::one_time_keys(&session.user_id, &session.device_id, 0, KEYS_PER_UPLOAD, &mut noise),
                    "fallback_keys": e2ee::fallback_keys(&session.user_id, &session.device_id, &mut noise),
                });
                let answer = setup.api.setup_upload_keys(&session, &body, setup.rate_limited).await?;
                let answer: UploadAnswer =
                    serde_json::from_slice(&answer).context("keys/upload: unexpected response")?;
                anyhow::Ok(Device {
                    session,
                    keys_left: AtomicI64::new(answer.count()),
                    next_key: AtomicU64::new(KEYS_PER_UPLOAD),
                    wake: Notify::new(),
                })
            }
        })
        .buffered(setup_concurrency)
        .try_collect::<Vec<Device>>()
        .await?
        .into();
    let setup_took = setup_started.elapsed();

    // Clients, top-ups (keys-claim), the RSS sampler and progress lines.
    let endpoint =
        if args.workload == Workload::KeysQuery { KeysEndpoint::Query } else { KeysEndpoint::Claim };
    let (stop, stop_rx) = watch::channel(false);
    let stop_clients = Arc::new(AtomicBool::new(false));
    let rss_sampler =
        (!server.processes.is_empty()).then(|| tokio::spawn(sample_rss(server.pids(), stop_rx.clone())));
    let client_api = Api::new(&server.base_url, clients.len(), REQUEST_TIMEOUT)?;
    let next_target = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let client_tasks: Vec<_> = clients
        .into_iter()
        .map(|session| {
            let client = Client {
                api: client_api.clone(),
                session,
                endpoint,
                devices: devices.clone(),
                user_ids: user_ids.clone(),
                per_request: args.keys_per_request() as usize,
                next_target: next_target.clone(),
                answered: answered.clone(),
            };
            tokio::spawn(client.run(stop_clients.clone()))
        })
        .collect();
    let upload_tasks: Vec<_> = if endpoint == KeysEndpoint::Claim {
        let upload_api = Api::new(&server.base_url, devices.len(), REQUEST_TIMEOUT)?;
        (0..devices.len())
            .map(|index| tokio::spawn(top_up(upload_api.clone(), devices.clone(), index, stop_rx.clone())))
            .collect()
    } else {
        Vec::new()
    };
    progress.say(&format!(
        "{} clients calling /keys/{} ({} {} per request); warm-up {:?}, then measuring {:?}",
        args.senders,
        endpoint.as_str(),
        args.keys_per_request(),
        if endpoint == KeysEndpoint::Query { "users" } else { "devices" },
        args.warmup,
        args.duration
    ));
    let progress_task = tokio::spawn(report_progress(progress.clone(), answered));

    tokio::time::sleep(args.warmup).await;
    let window_start = Snapshot::take(&server);
    tokio::time::sleep(args.duration).await;
    let window_end = Snapshot::take(&server);
    stop_clients.store(true, Ordering::Relaxed);
    progress_task.abort();

    let mut requests = Vec::with_capacity(client_tasks.len());
    let mut claimed = ClaimTally::default();
    for task in client_tasks {
        let (outcome, tally) = task.await.context("a client task panicked")?;
        requests.push(outcome);
        claimed.add(&tally);
    }
    let _ = stop.send(true);
    let mut uploads = Vec::with_capacity(upload_tasks.len());
    for task in upload_tasks {
        uploads.push(task.await.context("a top-up task panicked")?);
    }
    let rss_samples = match rss_sampler {
        Some(task) => task.await.context("the RSS sampler panicked")?,
        None => Vec::new(),
    };
    let measurements = KeysMeasurements {
        backend: server.backend,
        base_url: server.base_url.clone(),
        server_pid: server.main_pid(),
        sync_workers: server.sync_workers,
        devices: devices.len(),
        setup_took,
        setup_rate_limited: setup_rate_limited.load(Ordering::Relaxed),
        window: Window { start_ns: window_start.at_ns, end_ns: window_end.at_ns },
        endpoint,
        requests,
        uploads: (endpoint == KeysEndpoint::Claim).then_some(uploads),
        claimed: (endpoint == KeysEndpoint::Claim).then_some(claimed),
        usage: usage(&server, &window_start, &window_end, rss_samples),
    };
    let report = KeysReport::new(args, measurements);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    // A spawned server stops here, after its last RSS reading.
    drop(server);
    Ok(())
}

/// A closed-loop client of `/keys/claim` or `/keys/query`.
struct Client {
    api: Api,
    session: Session,
    endpoint: KeysEndpoint,
    devices: Arc<[Device]>,
    user_ids: Arc<[String]>,
    per_request: usize,
    /// Shared by the clients: where the next request's devices (or users) start.
    next_target: Arc<AtomicUsize>,
    /// Answered requests of every client, for progress lines.
    answered: Arc<AtomicU64>,
}

impl Client {
    /// Sends requests until `stop`; each record's `other_members` is the devices or users asked.
    async fn run(self, stop: Arc<AtomicBool>) -> (SenderOutcome, ClaimTally) {
        let mut outcome = SenderOutcome::default();
        let mut tally = ClaimTally::default();
        let query = self.endpoint == KeysEndpoint::Query;
        let targets = if query { self.user_ids.len() } else { self.devices.len() };
        let per_request = self.per_request.min(targets);
        let asked = u32::try_from(per_request).unwrap_or(u32::MAX);
        let mut backoff = Backoff::default();
        while !stop.load(Ordering::Relaxed) {
            let first = self.next_target.fetch_add(per_request, Ordering::Relaxed);
            let indices: Vec<usize> = (first..first + per_request).map(|index| index % targets).collect();
            let body = if query { self.query_body(&indices) } else { self.claim_body(&indices) };
            let start_ns = clock::now_ns();
            let mut record = SendRecord { start_ns, ack_ns: None, other_members: asked };
            let reply = self.api.keys(&self.session, self.endpoint, &body).await;
            if !matches!(reply, Ok(Reply::RateLimited(_))) {
                backoff.reset();
            }
            match reply {
                Ok(Reply::Ok { body, received_ns, .. }) => {
                    record.ack_ns = Some(received_ns);
                    self.answered.fetch_add(1, Ordering::Relaxed);
                    if !query {
                        match serde_json::from_slice::<ClaimAnswer>(&body) {
                            Ok(answer) => self.count_claimed(&answer, &indices, &mut tally),
                            Err(error) => outcome.errors.bad_body(&error),
                        }
                    }
                }
                Ok(Reply::RateLimited(asked)) => {
                    outcome.errors.rate_limited += 1;
                    sleep_unless_stopped(backoff.rate_limited(asked), &stop).await;
                }
                Ok(Reply::Failed { status, body }) => {
                    outcome.errors.failed(status, &body);
                    tokio::time::sleep(FAILURE_PAUSE).await;
                }
                Err(error) => {
                    outcome.errors.transport(&error);
                    tokio::time::sleep(FAILURE_PAUSE).await;
                }
            }
            outcome.records.push(record);
        }
        (outcome, tally)
    }

    /// `/keys/query` for these users, all their devices.
    fn query_body(&self, users: &[usize]) -> Value {
        let users: Map<String, Value> =
            users.iter().map(|&user| (self.user_ids[user].clone(), json!([]))).collect();
        json!({ "device_keys": users })
    }

    /// `/keys/claim` of one key of each of these devices.
    fn claim_body(&self, devices: &[usize]) -> Value {
        let mut wanted = json!({});
        for &index in devices {
            let session = &self.devices[index].session;
            wanted[session.user_id.as_str()][session.device_id.as_str()] = json!(ONE_TIME_KEY_ALGORITHM);
        }
        json!({ "one_time_keys": wanted })
    }

    /// Counts what a claim got for each device asked, and wakes the devices that run low.
    fn count_claimed(&self, answer: &ClaimAnswer, indices: &[usize], tally: &mut ClaimTally) {
        for &index in indices {
            let device = &self.devices[index];
            let key = answer
                .one_time_keys
                .get(&device.session.user_id)
                .and_then(|devices| devices.get(&device.session.device_id))
                .and_then(Value::as_object)
                .and_then(|keys| keys.values().next());
            let Some(key) = key else {
                tally.none += 1;
                continue;
            };
            if key.get("fallback").and_then(Value::as_bool) == Some(true) {
                tally.fallback += 1;
                device.keys_left.store(0, Ordering::Relaxed);
                device.wake.notify_one();
            } else {
                tally.one_time += 1;
                if device.keys_left.fetch_sub(1, Ordering::Relaxed) - 1 < LOW_WATER {
                    device.wake.notify_one();
                }
            }
        }
    }
}

/// Device `index`'s top-ups: whenever woken with fewer than [`LOW_WATER`] keys left, it uploads
/// [`KEYS_PER_UPLOAD`] new ones, until `stop` turns true.
async fn top_up(
    api: Api,
    devices: Arc<[Device]>,
    index: usize,
    mut stop: watch::Receiver<bool>,
) -> SenderOutcome {
    let device = &devices[index];
    let session = &device.session;
    let mut outcome = SenderOutcome::default();
    let mut noise = Noise::new(index as u64 + (1 << 32));
    let mut backoff = Backoff::default();
    loop {
        // A back-off's wait may have seen the change already.
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            () = device.wake.notified() => {}
        }
        while device.keys_left.load(Ordering::Relaxed) < LOW_WATER && !*stop.borrow() {
            let first = device.next_key.fetch_add(KEYS_PER_UPLOAD, Ordering::Relaxed);
            let keys =
                e2ee::one_time_keys(&session.user_id, &session.device_id, first, KEYS_PER_UPLOAD, &mut noise);
            let body = json!({ "one_time_keys": keys });
            let start_ns = clock::now_ns();
            let asked = u32::try_from(KEYS_PER_UPLOAD).unwrap_or(u32::MAX);
            let mut record = SendRecord { start_ns, ack_ns: None, other_members: asked };
            let reply = api.keys(session, KeysEndpoint::Upload, &body).await;
            if !matches!(reply, Ok(Reply::RateLimited(_))) {
                backoff.reset();
            }
            match reply {
                Ok(Reply::Ok { body, received_ns, .. }) => {
                    record.ack_ns = Some(received_ns);
                    match serde_json::from_slice::<UploadAnswer>(&body) {
                        Ok(answer) => device.keys_left.store(answer.count(), Ordering::Relaxed),
                        Err(error) => outcome.errors.bad_body(&error),
                    }
                }
                Ok(Reply::RateLimited(asked)) => {
                    outcome.errors.rate_limited += 1;
                    let wait = backoff.rate_limited(asked);
                    tokio::select! {
                        biased;
                        _ = stop.changed() => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                Ok(Reply::Failed { status, body }) => {
                    outcome.errors.failed(status, &body);
                    tokio::time::sleep(FAILURE_PAUSE).await;
                }
                Err(error) => {
                    outcome.errors.transport(&error);
                    tokio::time::sleep(FAILURE_PAUSE).await;
                }
            }
            outcome.records.push(record);
        }
    }
    outcome
}

async fn report_progress(progress: Progress, answered: Arc<AtomicU64>) {
    let mut interval = tokio::time::interval(PROGRESS_INTERVAL);
    interval.tick().await;
    let mut last = 0;
    loop {
        interval.tick().await;
        let now = answered.load(Ordering::Relaxed);
        progress.say(&format!("{:.0} requests/s", (now - last) as f64 / PROGRESS_INTERVAL.as_secs_f64()));
        last = now;
    }
}
