//! One benchmark run, phase by phase: set up users and rooms, start every user's `/sync` loop,
//! send through a warm-up and the measured window, let the fan-out drain, stop everything and
//! hand the raw records to `report`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use tokio::sync::{oneshot, watch};

use crate::cli::Args;
use crate::clock;
use crate::matrix::{Api, Session};
use crate::plan::Plan;
use crate::procfs::{self, Process};
use crate::receiver::{LONG_POLL_TIMEOUT_MS, Receiver, ReceiverOutcome};
use crate::replication::{Poller, WorkerReadings};
use crate::report::{self, Measurements, ProcessMeasurement, Window};
use crate::sender::{Sender, SenderOutcome, TargetRoom};
use crate::server::Server;

/// Every initial sync must have answered within this long.
const INITIAL_SYNC_DEADLINE: Duration = Duration::from_secs(120);
/// Setup requests and sends give up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the server's RSS is sampled.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// How often progress goes to stderr while sending.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

const PASSWORD: &str = "ganglion-load-password";

/// Live totals, read for progress lines and to know when fan-out has drained.
#[derive(Debug, Default)]
pub struct Counters {
    pub acked: AtomicU64,
    /// Sum over acknowledged sends of the room's other members.
    pub expected_deliveries: AtomicU64,
    /// Load messages from others seen by any `/sync`, duplicates included.
    pub delivered: AtomicU64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    args.validate().map_err(anyhow::Error::msg)?;
    let users = args.users as usize;
    let rooms = args.rooms as usize;
    let plan = Plan::new(users, rooms, args.rooms_per_user as usize).map_err(anyhow::Error::msg)?;
    let progress = Progress::new();

    let server = Server::start(&args).await?;
    let processes: Vec<String> =
        server.processes.iter().map(|process| format!("{} pid {}", process.name, process.pid)).collect();
    progress.say(&format!(
        "server {} at {}{}",
        server.backend,
        server.base_url,
        if processes.is_empty() { String::new() } else { format!(" ({})", processes.join(", ")) }
    ));
    let replication = if server.workers.is_empty() { None } else { Some(Poller::new()?) };
    let setup_concurrency = args.setup_concurrency as usize;
    let setup_api = Api::new(&server.base_url, setup_concurrency, REQUEST_TIMEOUT)?;
    // Long-polls and sends get their own pools, each big enough for all of its requests at
    // once, so a send never waits behind a held-open /sync for a connection.
    let sync_timeout = Duration::from_millis(LONG_POLL_TIMEOUT_MS) + REQUEST_TIMEOUT;
    let sync_api = Api::new(&server.base_url, users, sync_timeout)?;
    let send_api = Api::new(&server.base_url, args.senders as usize, REQUEST_TIMEOUT)?;
    setup_api.versions().await.context("the server does not answer /_matrix/client/versions")?;

    // Setup.
    let setup_started = Instant::now();
    let run_id: Arc<str> = Arc::from(run_id());
    let setup_rate_limited = AtomicU64::new(0);
    progress.say(&format!("registering {users} users (run {run_id})"));
    let sessions: Vec<Session> = stream::iter(0..users)
        .map(|user| {
            let username = format!("load{run_id}_{user}");
            let (api, rate_limited) = (&setup_api, &setup_rate_limited);
            async move { api.register(&username, PASSWORD, rate_limited).await }
        })
        .buffered(setup_concurrency)
        .try_collect()
        .await?;
    progress.say(&format!("creating {rooms} rooms"));
    let room_ids: Vec<String> = stream::iter(0..rooms)
        .map(|room| {
            let creator = &sessions[plan.creator(room)];
            let name = format!("load {run_id} room {room}");
            let (api, rate_limited) = (&setup_api, &setup_rate_limited);
            async move { api.create_room(creator, &name, rate_limited).await }
        })
        .buffered(setup_concurrency)
        .try_collect()
        .await?;
    let joins = plan.joins();
    progress.say(&format!("{} joins ({:.1} members per room)", joins.len(), plan.mean_members()));
    stream::iter(joins)
        .map(|(user, room)| {
            let (api, rate_limited) = (&setup_api, &setup_rate_limited);
            let (session, room_id) = (&sessions[user], &room_ids[room]);
            async move { api.join(session, room_id, rate_limited).await }
        })
        .buffer_unordered(setup_concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    let setup_took = setup_started.elapsed();

    // Every user's /sync loop, and the initial syncs all at once.
    progress.say(&format!("{users} initial syncs"));
    let counters = Arc::new(Counters::default());
    let filter: Option<Arc<str>> = args
        .timeline_limit
        .map(|limit| Arc::from(format!(r#"{{"room":{{"timeline":{{"limit":{limit}}}}}}}"#)));
    let (stop_receivers, stop_receivers_rx) = watch::channel(false);
    let mut receiver_tasks = Vec::with_capacity(users);
    let mut initial_syncs = Vec::with_capacity(users);
    for session in &sessions {
        let (initial_tx, initial_rx) = oneshot::channel();
        let receiver = Receiver {
            api: sync_api.clone(),
            session: session.clone(),
            run_id: run_id.clone(),
            filter: filter.clone(),
            counters: counters.clone(),
        };
        receiver_tasks.push(tokio::spawn(receiver.run(initial_tx, stop_receivers_rx.clone())));
        initial_syncs.push(initial_rx);
    }
    let initial_sync_times =
        match tokio::time::timeout(INITIAL_SYNC_DEADLINE, collect_initial(initial_syncs)).await {
            Ok(Ok(times)) => times,
            Ok(Err(error)) => {
                let _ = stop_receivers.send(true);
                return Err(error);
            }
            Err(_) => {
                let _ = stop_receivers.send(true);
                anyhow::bail!("not every initial sync answered within {}s", INITIAL_SYNC_DEADLINE.as_secs());
            }
        };

    // Senders, the RSS sampler and progress lines.
    let rss_sampler = (!server.processes.is_empty())
        .then(|| tokio::spawn(sample_rss(server.pids(), stop_receivers_rx.clone())));
    let stop_senders = Arc::new(AtomicBool::new(false));
    // Paced senders share the rate evenly, their slots staggered across one period.
    let pace_period = args.send_rate.map(|rate| Duration::from_secs_f64(f64::from(args.senders) / rate));
    let pace_origin = tokio::time::Instant::now();
    let mut sender_tasks = Vec::with_capacity(args.senders as usize);
    for index in 0..args.senders {
        let user = index as usize % users;
        let target_rooms = plan.rooms_of_user[user]
            .iter()
            .map(|&room| TargetRoom {
                room_id: room_ids[room].clone(),
                other_members: u32::try_from(plan.members_of_room[room].len() - 1).unwrap_or(u32::MAX),
            })
            .collect();
        let sender = Sender {
            api: send_api.clone(),
            session: sessions[user].clone(),
            index,
            rooms: target_rooms,
            run_id: run_id.clone(),
            counters: counters.clone(),
            pace: pace_period.map(|period| {
                (period, pace_origin + period.mul_f64(f64::from(index) / f64::from(args.senders)))
            }),
        };
        sender_tasks.push(tokio::spawn(sender.run(stop_senders.clone())));
    }
    progress.say(&format!(
        "{} senders running{}; warm-up {:?}, then measuring {:?}",
        args.senders,
        args.send_rate.map(|rate| format!(" at up to {rate} sends/s in all")).unwrap_or_default(),
        args.warmup,
        args.duration
    ));
    let progress_task = tokio::spawn(report_progress(progress.clone(), counters.clone()));

    tokio::time::sleep(args.warmup).await;
    // Each call resets the worker's lag figures: the second covers the window.
    let replication_start = match &replication {
        Some(poller) => poller.poll(&server.workers).await,
        None => Vec::new(),
    };
    let window_start = Snapshot::take(&server);
    tokio::time::sleep(args.duration).await;
    let window_end = Snapshot::take(&server);
    let replication_end = match &replication {
        Some(poller) => poller.poll(&server.workers).await,
        None => Vec::new(),
    };
    stop_senders.store(true, Ordering::Relaxed);
    progress_task.abort();

    let mut senders: Vec<SenderOutcome> = Vec::with_capacity(sender_tasks.len());
    for task in sender_tasks {
        senders.push(task.await.context("a sender task panicked")?);
    }

    // Fan-out drain: wait for every acknowledged message to reach every other member.
    let drain_started = Instant::now();
    loop {
        let expected = counters.expected_deliveries.load(Ordering::Relaxed);
        let delivered = counters.delivered.load(Ordering::Relaxed);
        if delivered >= expected || drain_started.elapsed() >= args.drain {
            progress.say(&format!(
                "senders stopped; {delivered} of {expected} deliveries arrived after {:.1}s of drain",
                drain_started.elapsed().as_secs_f64()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_receivers.send(true);
    let mut receivers: Vec<ReceiverOutcome> = Vec::with_capacity(receiver_tasks.len());
    for task in receiver_tasks {
        receivers.push(task.await.context("a receiver task panicked")?);
    }
    let rss_samples = match rss_sampler {
        Some(task) => task.await.context("the RSS sampler panicked")?,
        None => Vec::new(),
    };
    let processes: Vec<ProcessMeasurement> = server
        .processes
        .iter()
        .zip(window_start.processes.iter().zip(&window_end.processes))
        .map(|(process, (start, end))| ProcessMeasurement {
            name: process.name.clone(),
            role: process.role.clone(),
            pid: process.pid,
            rss_at_end_bytes: end.rss_bytes,
            peak_rss_bytes: Process::Pid(process.pid).peak_rss_bytes(),
            cpu_seconds: start.cpu_seconds.zip(end.cpu_seconds).map(|(start, end)| end - start),
        })
        .collect();
    let replication: Vec<WorkerReadings> = server
        .workers
        .iter()
        .zip(replication_start.into_iter().zip(replication_end))
        .map(|(worker, (start, end))| WorkerReadings { name: worker.name.clone(), start, end })
        .collect();

    let measurements = Measurements {
        backend: server.backend,
        base_url: server.base_url.clone(),
        server_pid: server.main_pid(),
        sync_workers: server.sync_workers,
        mean_members: plan.mean_members(),
        setup_took,
        setup_rate_limited: setup_rate_limited.load(Ordering::Relaxed),
        initial_sync_times,
        window: Window { start_ns: window_start.at_ns, end_ns: window_end.at_ns },
        senders,
        receivers,
        rss_samples,
        processes,
        database_cpu_seconds: difference(window_start.database_cpu_seconds, window_end.database_cpu_seconds),
        redis_cpu_seconds: difference(window_start.redis_cpu_seconds, window_end.redis_cpu_seconds),
        nginx_cpu_seconds: difference(window_start.nginx_cpu_seconds, window_end.nginx_cpu_seconds),
        client_cpu_seconds: difference(window_start.client_cpu_seconds, window_end.client_cpu_seconds),
        replication,
    };
    let report = report::Report::new(&args, measurements);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    // A spawned server stops here, after its last RSS reading.
    drop(server);
    Ok(())
}

/// Waits for every user's initial sync and returns the durations, failing on the first error.
async fn collect_initial(
    initial_syncs: Vec<oneshot::Receiver<anyhow::Result<Duration>>>,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(initial_syncs.len());
    for initial in initial_syncs {
        times.push(initial.await.context("a receiver task ended early")??);
    }
    Ok(times)
}

/// `end - start` of two CPU time readings.
fn difference(start: Option<f64>, end: Option<f64>) -> Option<f64> {
    start.zip(end).map(|(start, end)| end - start)
}

/// The summed RSS of `pids` as `(clock ns, bytes)` until `stop` turns true.
async fn sample_rss(pids: Vec<u32>, mut stop: watch::Receiver<bool>) -> Vec<(u64, u64)> {
    let mut samples = Vec::new();
    let mut interval = tokio::time::interval(RSS_SAMPLE_INTERVAL);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = interval.tick() => {}
        }
        let readings: Vec<u64> = pids.iter().filter_map(|&pid| Process::Pid(pid).rss_bytes()).collect();
        if !readings.is_empty() {
            samples.push((clock::now_ns(), readings.iter().sum()));
        }
    }
    samples
}

/// Readings taken at a window boundary.
struct Snapshot {
    at_ns: u64,
    /// In `Server::processes` order.
    processes: Vec<ProcessReading>,
    database_cpu_seconds: Option<f64>,
    redis_cpu_seconds: Option<f64>,
    nginx_cpu_seconds: Option<f64>,
    client_cpu_seconds: Option<f64>,
}

struct ProcessReading {
    rss_bytes: Option<u64>,
    cpu_seconds: Option<f64>,
}

impl Snapshot {
    fn take(server: &Server) -> Snapshot {
        Snapshot {
            at_ns: clock::now_ns(),
            processes: server
                .processes
                .iter()
                .map(|process| ProcessReading {
                    rss_bytes: Process::Pid(process.pid).rss_bytes(),
                    cpu_seconds: Process::Pid(process.pid).cpu_seconds(),
                })
                .collect(),
            database_cpu_seconds: server.database_pid.and_then(procfs::tree_cpu_seconds),
            redis_cpu_seconds: server.redis_pid.and_then(procfs::tree_cpu_seconds),
            nginx_cpu_seconds: server.nginx_pid.and_then(procfs::tree_cpu_seconds),
            client_cpu_seconds: Process::This.cpu_seconds(),
        }
    }
}

/// Progress lines on stderr, stamped with the time since the run started.
#[derive(Clone)]
struct Progress {
    started: Instant,
}

impl Progress {
    fn new() -> Progress {
        Progress { started: Instant::now() }
    }

    fn say(&self, message: &str) {
        eprintln!("[{:>7.1}s] {message}", self.started.elapsed().as_secs_f64());
    }
}

async fn report_progress(progress: Progress, counters: Arc<Counters>) {
    let mut interval = tokio::time::interval(PROGRESS_INTERVAL);
    interval.tick().await;
    let (mut acked, mut delivered) = (0, 0);
    loop {
        interval.tick().await;
        let now_acked = counters.acked.load(Ordering::Relaxed);
        let now_delivered = counters.delivered.load(Ordering::Relaxed);
        let seconds = PROGRESS_INTERVAL.as_secs_f64();
        progress.say(&format!(
            "{:.0} sends/s, {:.0} deliveries/s",
            (now_acked - acked) as f64 / seconds,
            (now_delivered - delivered) as f64 / seconds
        ));
        (acked, delivered) = (now_acked, now_delivered);
    }
}

/// A short run identifier, unique enough that repeated runs against one server never collide
/// on usernames or transaction IDs.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since_epoch| since_epoch.as_nanos())
        .unwrap_or_default();
    let mut value = (nanos as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id());
    let mut id = String::new();
    for _ in 0..8 {
        let digit = (value % 36) as u32;
        id.push(char::from_digit(digit, 36).unwrap_or('0'));
        value /= 36;
    }
    id
}
