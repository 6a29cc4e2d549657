//! One benchmark run, phase by phase: set up users and rooms (or devices), start every
//! receiver's `/sync` loop (every syncing user's, or every device's), send through a warm-up and
//! the measured window, let the fan-out drain, stop everything and hand the raw records to
//! `report`. The keys workloads branch off to `keys` once the server runs; the helpers at the end
//! serve both.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use tokio::sync::{oneshot, watch};

use crate::cli::{Args, Workload};
use crate::clock;
use crate::e2ee::{MegolmSession, Noise};
use crate::matrix::{Api, Session};
use crate::plan::Plan;
use crate::procfs::{self, Process};
use crate::receiver::{LONG_POLL_TIMEOUT_MS, Receiver, ReceiverOutcome, sync_filter};
use crate::replication::{Poller, WorkerReadings};
use crate::report::{self, Measurements, ProcessMeasurement, Usage, Window};
use crate::sender::{
    ENCRYPTED_EVENT_TYPE, PLAIN_EVENT_TYPE, Sender, SenderOutcome, TargetDevice, TargetRoom, Traffic,
};
use crate::server::Server;
use crate::setup::Setup;

/// Every initial sync must have answered within this long (all at once; a Python server on 2
/// cores takes a while for 100 users in 10 rooms of 50).
const INITIAL_SYNC_DEADLINE: Duration = Duration::from_secs(300);
/// Setup requests and sends give up after this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the server's RSS is sampled.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// How often progress goes to stderr while sending.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// Live totals, read for progress lines and to know when fan-out has drained.
#[derive(Debug, Default)]
pub struct Counters {
    pub acked: AtomicU64,
    /// Sum over acknowledged sends of the room's other syncing members (or the devices).
    pub expected_deliveries: AtomicU64,
    /// Load messages from others seen by any `/sync`, duplicates included.
    pub delivered: AtomicU64,
    /// Successful incremental `/sync` answers.
    pub sync_answers: AtomicU64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    args.validate().map_err(anyhow::Error::msg)?;
    // A plan that cannot work fails before any server starts.
    let plan = match args.workload {
        Workload::Rooms => Some(
            Plan::new(args.users as usize, args.rooms as usize, args.rooms_per_user as usize)
                .and_then(|plan| plan.with_syncing_users(args.syncing_users() as usize))
                .map_err(anyhow::Error::msg)?,
        ),
        Workload::ToDevice
        | Workload::KeysClaim
        | Workload::KeysQuery
        | Workload::FirstList
        | Workload::LiveUpdate
        | Workload::Media => None,
    };
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
    match args.workload {
        Workload::KeysClaim | Workload::KeysQuery => crate::keys::run(&args, server, &progress).await,
        Workload::FirstList => crate::sliding::first_list(&args, server, &progress).await,
        Workload::LiveUpdate => crate::sliding::live_update(&args, server, &progress).await,
        Workload::Media => crate::media::media(&args, server, &progress).await,
        Workload::Rooms | Workload::ToDevice => messages(&args, server, plan.as_ref(), &progress).await,
    }
}

/// Who takes part in a messages run.
struct Population {
    /// One `/sync` loop each: every syncing user in rooms, every device of every user to
    /// devices.
    receivers: Vec<Session>,
    /// Each sender's device and what it sends.
    senders: Vec<(Session, Traffic)>,
    /// Members per room on average, or devices each send goes to.
    mean_recipients: f64,
    /// Rooms: syncing members per room on average.
    mean_syncing_members: Option<f64>,
}

/// The rooms and to-device workloads: set up, start every receiver's `/sync` loop, send through
/// a warm-up and the measured window, let the fan-out drain, report.
async fn messages(
    args: &Args,
    server: Server,
    plan: Option<&Plan>,
    progress: &Progress,
) -> anyhow::Result<()> {
    let replication = if server.workers.is_empty() { None } else { Some(Poller::new()?) };
    let setup_concurrency = args.setup_concurrency as usize;
    let setup_api = Api::new(&server.base_url, setup_concurrency, REQUEST_TIMEOUT)?;
    setup_api.versions().await.context("the server does not answer /_matrix/client/versions")?;

    // Setup.
    let setup_started = Instant::now();
    let run_id: Arc<str> = Arc::from(run_id());
    let setup_rate_limited = AtomicU64::new(0);
    let setup = Setup {
        api: &setup_api,
        run_id: &run_id,
        concurrency: setup_concurrency,
        rate_limited: &setup_rate_limited,
    };
    let population = match plan {
        Some(plan) => populate_rooms(args, &setup, plan, progress).await?,
        // The to-device workload.
        None => populate_devices(args, &setup, progress).await?,
    };
    // --push: every receiver (each syncing user) gets a pusher to the tool's gateway.
    let gateway = match args.push {
        true => {
            let gateway = crate::push::Gateway::start().await?;
            progress.say(&format!("{} pushers to {}", population.receivers.len(), gateway.url));
            let receivers = &population.receivers;
            crate::push::set_pushers(
                &setup_api,
                receivers,
                &gateway.url,
                setup_concurrency,
                &setup_rate_limited,
            )
            .await?;
            Some(gateway)
        }
        false => None,
    };
    let setup_took = setup_started.elapsed();
    let plain = args.workload == Workload::Rooms && !args.encrypted;
    let event_type = if plain { PLAIN_EVENT_TYPE } else { ENCRYPTED_EVENT_TYPE };

    // Long-polls and sends get their own pools, each big enough for all of its requests at
    // once, so a send never waits behind a held-open /sync for a connection.
    let sync_timeout = Duration::from_millis(LONG_POLL_TIMEOUT_MS) + REQUEST_TIMEOUT;
    let sync_api = Api::new(&server.base_url, population.receivers.len(), sync_timeout)?;
    let send_api = Api::new(&server.base_url, population.senders.len(), REQUEST_TIMEOUT)?;

    // Every receiver's /sync loop, and the initial syncs all at once.
    progress.say(&format!("{} initial syncs", population.receivers.len()));
    let counters = Arc::new(Counters::default());
    let filter: Option<Arc<str>> = sync_filter(args.timeline_limit, args.lazy_load_members).map(Arc::from);
    let (stop_receivers, stop_receivers_rx) = watch::channel(false);
    let mut receiver_tasks = Vec::with_capacity(population.receivers.len());
    let mut initial_syncs = Vec::with_capacity(population.receivers.len());
    for session in &population.receivers {
        let (initial_tx, initial_rx) = oneshot::channel();
        let receiver = Receiver {
            api: sync_api.clone(),
            session: session.clone(),
            run_id: run_id.clone(),
            event_type,
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
    for (index, (session, traffic)) in (0..args.senders).zip(population.senders) {
        let sender = Sender {
            api: send_api.clone(),
            session,
            index,
            traffic,
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

    // Fan-out drain: wait for every acknowledged message to reach every recipient.
    let drain_started = Instant::now();
    loop {
        let expected = counters.expected_deliveries.load(Ordering::Relaxed);
        let delivered = counters.delivered.load(Ordering::Relaxed);
        let pushed = gateway.as_ref().map_or(expected, crate::push::Gateway::received);
        if delivered >= expected && pushed >= expected || drain_started.elapsed() >= args.drain {
            let pushes = match &gateway {
                Some(_) => format!(", {pushed} of {expected} pushes"),
                None => String::new(),
            };
            progress.say(&format!(
                "senders stopped; {delivered} of {expected} deliveries{pushes} arrived after {:.1}s of drain",
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
        mean_members: population.mean_recipients,
        mean_syncing_members: population.mean_syncing_members,
        setup_took,
        setup_rate_limited: setup_rate_limited.load(Ordering::Relaxed),
        initial_sync_times,
        window: Window { start_ns: window_start.at_ns, end_ns: window_end.at_ns },
        senders,
        receivers,
        usage: usage(&server, &window_start, &window_end, rss_samples),
        replication,
    };
    let window = measurements.window;
    let mut report = report::Report::new(args, measurements);
    report.push = gateway.map(|gateway| {
        let expected = counters.expected_deliveries.load(Ordering::Relaxed);
        gateway.report(window, expected, args.cluster_pusher_workers())
    });
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    // A spawned server stops here, after its last RSS reading.
    drop(server);
    Ok(())
}

/// The rooms workload's users and rooms: the first `plan.syncing` users receive; sender i sends
/// as `plan.sender_user(i)` (user i mod users when every user syncs), round-robin over that
/// user's rooms, and expects each message at the room's other syncing members.
async fn populate_rooms(
    args: &Args,
    setup: &Setup<'_>,
    plan: &Plan,
    progress: &Progress,
) -> anyhow::Result<Population> {
    let (users, rooms) = (args.users as usize, args.rooms as usize);
    progress.say(&format!("registering {users} users (run {})", setup.run_id));
    let sessions = setup.register("", users).await?;
    progress.say(&format!("creating {rooms} {}rooms", if args.encrypted { "encrypted " } else { "" }));
    let room_ids: Vec<String> = stream::iter(0..rooms)
        .map(|room| {
            let creator = &sessions[plan.creator(room)];
            let name = format!("load {} room {room}", setup.run_id);
            async move { setup.api.create_room(creator, &name, args.encrypted, setup.rate_limited).await }
        })
        .buffered(setup.concurrency)
        .try_collect()
        .await?;
    let joins = plan.joins();
    progress.say(&format!("{} joins ({:.1} members per room)", joins.len(), plan.mean_members()));
    stream::iter(joins)
        .map(|(user, room)| {
            let (session, room_id) = (&sessions[user], &room_ids[room]);
            async move { setup.api.join(session, room_id, setup.rate_limited).await }
        })
        .buffer_unordered(setup.concurrency)
        .try_collect::<Vec<()>>()
        .await?;

    let mut noise = Noise::new(u64::from(args.users));
    let senders = (0..args.senders as usize)
        .map(|index| {
            let user = plan.sender_user(index);
            let session = sessions[user].clone();
            let rooms = plan.rooms_of_user[user]
                .iter()
                .map(|&room| TargetRoom {
                    room_id: room_ids[room].clone(),
                    other_members: u32::try_from(plan.recipients(room, user)).unwrap_or(u32::MAX),
                })
                .collect();
            let megolm = args.encrypted.then(|| MegolmSession::new(&mut noise, &session.device_id));
            (session, Traffic::Rooms { rooms, megolm })
        })
        .collect();
    if plan.syncing < users {
        progress.say(&format!(
            "{} of {users} users long-poll /sync ({:.1} syncing members per room)",
            plan.syncing,
            plan.mean_syncing_members()
        ));
    }
    let mut receivers = sessions;
    receivers.truncate(plan.syncing);
    Ok(Population {
        receivers,
        senders,
        mean_recipients: plan.mean_members(),
        mean_syncing_members: Some(plan.mean_syncing_members()),
    })
}

/// The to-device workload's devices: every device of every user receives; each sender is a user
/// of its own and sends to all of them.
async fn populate_devices(args: &Args, setup: &Setup<'_>, progress: &Progress) -> anyhow::Result<Population> {
    let (users, devices_per_user) = (args.users as usize, args.devices_per_user() as usize);
    progress.say(&format!(
        "registering {users} users with {devices_per_user} devices each, and {} senders (run {})",
        args.senders, setup.run_id
    ));
    let registered = setup.register("", users).await?;
    let devices = setup.devices("", registered, devices_per_user).await?;
    let sender_sessions = setup.register("sender", args.senders as usize).await?;

    let mut noise = Noise::new(u64::from(args.users));
    let targets: Arc<[TargetDevice]> = devices
        .iter()
        .map(|device| TargetDevice {
            user_id: device.user_id.clone(),
            device_id: device.device_id.clone(),
            identity_key: noise.key(),
        })
        .collect();
    let senders = sender_sessions
        .into_iter()
        .map(|session| {
            let traffic = Traffic::ToDevice { devices: targets.clone(), identity_key: noise.key() };
            (session, traffic)
        })
        .collect();
    Ok(Population {
        mean_recipients: devices.len() as f64,
        mean_syncing_members: None,
        receivers: devices,
        senders,
    })
}

/// What the server's processes, PostgreSQL, Redis, nginx and the load tool used between two
/// snapshots.
pub fn usage(server: &Server, start: &Snapshot, end: &Snapshot, rss_samples: Vec<(u64, u64)>) -> Usage {
    let processes = server
        .processes
        .iter()
        .zip(start.processes.iter().zip(&end.processes))
        .map(|(process, (start, end))| ProcessMeasurement {
            name: process.name.clone(),
            role: process.role.clone(),
            pid: process.pid,
            rss_at_end_bytes: end.rss_bytes,
            peak_rss_bytes: Process::Pid(process.pid).peak_rss_bytes(),
            cpu_seconds: start.cpu_seconds.zip(end.cpu_seconds).map(|(start, end)| end - start),
        })
        .collect();
    Usage {
        rss_samples,
        processes,
        database_cpu_seconds: difference(start.database_cpu_seconds, end.database_cpu_seconds),
        redis_cpu_seconds: difference(start.redis_cpu_seconds, end.redis_cpu_seconds),
        nginx_cpu_seconds: difference(start.nginx_cpu_seconds, end.nginx_cpu_seconds),
        client_cpu_seconds: difference(start.client_cpu_seconds, end.client_cpu_seconds),
    }
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
pub async fn sample_rss(pids: Vec<u32>, mut stop: watch::Receiver<bool>) -> Vec<(u64, u64)> {
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
pub struct Snapshot {
    pub at_ns: u64,
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
    pub fn take(server: &Server) -> Snapshot {
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
pub struct Progress {
    started: Instant,
}

impl Progress {
    fn new() -> Progress {
        Progress { started: Instant::now() }
    }

    pub fn say(&self, message: &str) {
        eprintln!("[{:>7.1}s] {message}", self.started.elapsed().as_secs_f64());
    }
}

async fn report_progress(progress: Progress, counters: Arc<Counters>) {
    let mut interval = tokio::time::interval(PROGRESS_INTERVAL);
    interval.tick().await;
    let (mut acked, mut delivered, mut answers) = (0, 0, 0);
    loop {
        interval.tick().await;
        let now_acked = counters.acked.load(Ordering::Relaxed);
        let now_delivered = counters.delivered.load(Ordering::Relaxed);
        let now_answers = counters.sync_answers.load(Ordering::Relaxed);
        let seconds = PROGRESS_INTERVAL.as_secs_f64();
        progress.say(&format!(
            "{:.0} sends/s, {:.0} deliveries/s, {:.0} /sync responses/s",
            (now_acked - acked) as f64 / seconds,
            (now_delivered - delivered) as f64 / seconds,
            (now_answers - answers) as f64 / seconds
        ));
        (acked, delivered, answers) = (now_acked, now_delivered, now_answers);
    }
}

/// A short run identifier, unique enough that repeated runs against one server never collide
/// on usernames or transaction IDs.
pub fn run_id() -> String {
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
