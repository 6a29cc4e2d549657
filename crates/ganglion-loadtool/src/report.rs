//! Turns a run's raw records into the figures the issue asks for, as one JSON object or a table.
//! The keys workloads have a report of their own, in `report::keys`.
//!
//! Window rules: a send counts when its 2xx arrived inside the measured window; a fan-out sample
//! counts when the message's `ts_ns` (taken just before its PUT) is inside the window; a delivery
//! (for deliveries/s) and an incremental `/sync` answer (for /sync responses/s) count when their
//! answer arrived inside the window. Completeness (missing and duplicate deliveries) covers every
//! acknowledged send, warm-up included.
//!
//! Only syncing members receive: with --syncing-users, a message owes one delivery to each of its
//! room's syncing members other than its sender, and the figures cover them alone.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::cli::{Args, Workload};
use crate::matrix::ErrorCounts;
use crate::receiver::ReceiverOutcome;
use crate::replication::{Lag, WorkerReadings};
use crate::sender::SenderOutcome;
use crate::stats::{Summary, summarize_ns};

pub mod keys;

const MIB: f64 = 1024.0 * 1024.0;
const SYNAPSE_REFERENCE: &str = "Synapse on SQLite, 2 cores, 20 users in 10 rooms, 4 senders: \
                                 57 sends/s, send p50 70 ms, fan-out p99 35 ms, 165 MiB RSS";

/// The measured window, in `clock` nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Window {
    pub fn contains(self, ns: u64) -> bool {
        (self.start_ns..self.end_ns).contains(&ns)
    }

    pub fn seconds(self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9
    }
}

/// Everything a run recorded.
pub struct Measurements {
    pub backend: &'static str,
    pub base_url: String,
    /// The only server process, or a cluster's master.
    pub server_pid: Option<u32>,
    pub sync_workers: Option<u32>,
    /// Members per room, or devices each send goes to.
    pub mean_members: f64,
    /// Rooms workload: syncing members per room.
    pub mean_syncing_members: Option<f64>,
    pub setup_took: Duration,
    pub setup_rate_limited: u64,
    pub initial_sync_times: Vec<Duration>,
    pub window: Window,
    /// Indexed by sender number.
    pub senders: Vec<SenderOutcome>,
    pub receivers: Vec<ReceiverOutcome>,
    pub usage: Usage,
    /// A cluster's workers' `/_ganglion/v1/replication` at both ends of the window.
    pub replication: Vec<WorkerReadings>,
}

/// What the server, its database, Redis, nginx and the load tool used during the window.
pub struct Usage {
    /// `(clock ns, bytes)`, summed over the server's processes.
    pub rss_samples: Vec<(u64, u64)>,
    /// Every `ganglion` process (one, or a cluster's), or --server-pid's.
    pub processes: Vec<ProcessMeasurement>,
    /// CPU seconds used during the window by PostgreSQL's postmaster and backends, for a
    /// spawned PostgreSQL or --database-pid's.
    pub database_cpu_seconds: Option<f64>,
    /// A spawned cluster's Redis, and nginx's master and workers.
    pub redis_cpu_seconds: Option<f64>,
    pub nginx_cpu_seconds: Option<f64>,
    pub client_cpu_seconds: Option<f64>,
}

/// One `ganglion` process's readings.
#[derive(Debug, Clone)]
pub struct ProcessMeasurement {
    pub name: String,
    pub role: String,
    pub pid: u32,
    pub rss_at_end_bytes: Option<u64>,
    /// VmHWM, read after the run.
    pub peak_rss_bytes: Option<u64>,
    /// CPU seconds used during the window.
    pub cpu_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub server: ServerInfo,
    pub config: Config,
    pub setup_s: f64,
    pub sends: Sends,
    pub fanout: Fanout,
    /// Time from sending each user's first `/sync` to having its whole body; all users at once.
    pub initial_sync_ms: Option<Summary>,
    pub sync: Syncs,
    /// A cluster's replication lag over the window; `null` for a single process.
    pub replication: Option<Replication>,
    pub memory: Memory,
    pub cpu: Cpu,
    /// Each `ganglion` process (all of a cluster's), with its role.
    pub processes: Vec<ProcessReport>,
    /// Rate-limit answers during setup (register, createRoom, join), waited out and retried.
    pub setup_rate_limited: u64,
    pub targets: Vec<TargetCheck>,
    /// `--push`: what the tool's push gateway took.
    pub push: Option<crate::push::PushReport>,
}

#[derive(Debug, Serialize)]
pub struct ServerInfo {
    /// `sqlite`, `postgres` or `cluster` for a spawned server, `url` for one given with --url.
    pub backend: &'static str,
    /// nginx's URL for a cluster.
    pub base_url: String,
    /// The only process, or a cluster's master (every process is in `processes`).
    pub pid: Option<u32>,
    /// A spawned cluster's sync workers.
    pub sync_workers: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct Config {
    /// `rooms` or `to-device`.
    pub workload: &'static str,
    /// Rooms with `m.room.encryption`, and `m.room.encrypted` events sent into them.
    pub encrypted: bool,
    /// To-device workload: each user's devices, every one a recipient.
    pub devices_per_user: Option<u32>,
    pub users: u32,
    pub rooms: u32,
    pub rooms_per_user: u32,
    /// Rooms workload: the users that long-poll `/sync` (the first ones); the others only send
    /// or idle.
    pub syncing_users: Option<u32>,
    /// To-device workload: the devices each send goes to.
    pub mean_members_per_room: f64,
    /// Rooms workload: the syncing ones among them.
    pub mean_syncing_members_per_room: Option<f64>,
    pub senders: u32,
    /// --send-rate: the cap on sends per second over all senders, if any.
    pub send_rate: Option<f64>,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub timeline_limit: Option<u32>,
    /// `/sync`'s filter asks for lazy-loaded members.
    pub lazy_load_members: bool,
    pub client_threads: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct Sends {
    /// Sends acknowledged inside the window, per second of the window.
    pub per_sec: f64,
    /// The slowest and fastest whole second of the window: "sustained" is the slowest.
    pub slowest_second: Option<u64>,
    pub fastest_second: Option<u64>,
    /// Sends acknowledged inside the window.
    pub ok_in_window: u64,
    /// Sends acknowledged over the whole run, warm-up included.
    pub ok_total: u64,
    /// Latency of the accepted PUT, from just before sending it to having its answer.
    pub latency_ms: Option<Summary>,
    pub errors: ErrorCounts,
}

#[derive(Debug, Serialize)]
pub struct Fanout {
    /// From just before the PUT to another member's `/sync` having the event.
    pub latency_ms: Option<Summary>,
    /// From the sender having its 2xx to the other member having the event; negative when the
    /// `/sync` answer came first.
    pub after_ack_ms: Option<Summary>,
    /// Deliveries per second: distinct messages from others that syncing members' `/sync`s
    /// received inside the window (whenever sent), per second of the window.
    pub per_sec: f64,
    /// Those deliveries.
    pub in_window: u64,
    /// Deliveries owed: each acknowledged send times its room's other syncing members (or the
    /// devices).
    pub expected: u64,
    /// Distinct deliveries of acknowledged sends.
    pub delivered: u64,
    pub missing: u64,
    /// The same event delivered to the same user more than once.
    pub duplicates: u64,
    /// Events delivered although their send failed from the sender's side (e.g. a timeout).
    pub of_failed_sends: u64,
    /// `/sync` answers with a `limited` timeline: events were skipped, not lost. Raise
    /// --timeline-limit if this is not zero.
    pub limited_timelines: u64,
}

#[derive(Debug, Serialize)]
pub struct Syncs {
    /// `/sync` loops: syncing users, or devices.
    pub long_pollers: u64,
    /// Successful incremental `/sync` answers that arrived inside the window, per second of it.
    pub responses_per_sec: f64,
    pub responses_in_window: u64,
    /// Every `/sync` request of the run: initial, incremental, failed or refused.
    pub requests: u64,
    pub errors: ErrorCounts,
    /// Successful incremental syncs by the process that answered them.
    pub by_instance: Vec<InstanceAnswers>,
    /// Successful incremental syncs Ganglion answered from memory alone, and with the database
    /// (`X-Ganglion-Sync-Source`; both 0 for servers that do not say).
    pub from_memory: u64,
    pub from_database: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceAnswers {
    /// `X-Ganglion-Instance`: `<role>/<name>`, or `unknown`.
    pub instance: String,
    pub answers: u64,
    /// Users (long-pollers) with at least one answer from it.
    pub users: u64,
}

#[derive(Debug, Serialize)]
pub struct Replication {
    /// One entry per worker (sync and client-reader), in start order.
    pub workers: Vec<WorkerLag>,
    /// The worst worker's figures: the highest p50, p99 and max over the workers with samples
    /// (each from a different worker, perhaps); `samples` is the total. The headline is `p99`.
    pub overall: Option<Lag>,
    /// Workers whose call failed at either end of the window.
    pub failed_workers: u64,
}

#[derive(Debug, Serialize)]
pub struct WorkerLag {
    pub name: String,
    /// Whether the worker followed Redis (rather than polling the database) at the start and
    /// at the end of the window.
    pub following_redis: (Option<bool>, Option<bool>),
    /// Its readable positions at the end of the window.
    pub positions: Option<String>,
    /// Over the window; `null` when a call failed.
    pub lag_ms: Option<Lag>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ProcessReport {
    pub name: String,
    pub role: String,
    pub pid: u32,
    pub rss_mib: Option<f64>,
    pub rss_peak_mib: Option<f64>,
    /// CPU seconds per second of the window.
    pub cpu_cores: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Memory {
    /// Server RSS at the end of the window (for a cluster: summed over its `ganglion` processes,
    /// as are the two figures below).
    pub rss_mib: Option<f64>,
    /// Highest sampled RSS inside the window.
    pub rss_max_in_window_mib: Option<f64>,
    /// The kernel's high-water mark (VmHWM) over the server's life, read after the run; for a
    /// cluster the sum of each process's own peak.
    pub rss_peak_mib: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Cpu {
    /// CPU seconds per second of the window: 2.0 is both cores of a 2-core machine. For a
    /// cluster, summed over its `ganglion` processes.
    pub server_cores: Option<f64>,
    /// The spawned PostgreSQL cluster, or --database-pid's (postmaster and backends); `null`
    /// otherwise.
    pub database_cores: Option<f64>,
    /// A spawned cluster's Redis and nginx (master and workers); `null` otherwise.
    pub redis_cores: Option<f64>,
    pub nginx_cores: Option<f64>,
    pub load_tool_cores: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct TargetCheck {
    pub metric: &'static str,
    pub target: String,
    pub value: Option<f64>,
    pub met: Option<bool>,
}

impl Report {
    pub fn new(args: &Args, measurements: Measurements) -> Report {
        let window = measurements.window;
        let sends = sends(&measurements.senders, window);
        let fanout = fanout(&measurements.senders, &measurements.receivers, window);
        let mut sync_errors = ErrorCounts::default();
        let mut sync_requests = 0;
        for receiver in &measurements.receivers {
            sync_requests += receiver.requests;
            sync_errors.merge(receiver.errors.clone());
        }
        let by_instance = answers_by_instance(&measurements.receivers);
        let from_memory = measurements.receivers.iter().map(|receiver| receiver.from_memory).sum();
        let from_database = measurements.receivers.iter().map(|receiver| receiver.from_database).sum();
        let responses_in_window = responses_in_window(&measurements.receivers, window);
        let mut initial: Vec<i64> = measurements
            .initial_sync_times
            .iter()
            .map(|took| i64::try_from(took.as_nanos()).unwrap_or(i64::MAX))
            .collect();
        let (memory, cpu, process_reports) = resources(&measurements.usage, window);
        let replication = replication(&measurements.replication);
        // The targets are for messages into rooms.
        let targets = match args.workload {
            Workload::Rooms => targets(measurements.backend, &sends, &fanout, &memory, replication.as_ref()),
            Workload::ToDevice
            | Workload::KeysClaim
            | Workload::KeysQuery
            | Workload::FirstList
            | Workload::LiveUpdate
            | Workload::Media => Vec::new(),
        };
        Report {
            server: ServerInfo {
                backend: measurements.backend,
                base_url: measurements.base_url,
                pid: measurements.server_pid,
                sync_workers: measurements.sync_workers,
            },
            config: Config {
                workload: args.workload.as_str(),
                encrypted: args.encrypted,
                devices_per_user: (args.workload == Workload::ToDevice).then(|| args.devices_per_user()),
                users: args.users,
                rooms: args.rooms,
                rooms_per_user: args.rooms_per_user.min(args.rooms),
                syncing_users: (args.workload == Workload::Rooms).then(|| args.syncing_users()),
                mean_members_per_room: measurements.mean_members,
                mean_syncing_members_per_room: measurements.mean_syncing_members,
                senders: args.senders,
                send_rate: args.send_rate,
                warmup_s: args.warmup.as_secs_f64(),
                duration_s: args.duration.as_secs_f64(),
                timeline_limit: args.timeline_limit,
                lazy_load_members: args.lazy_load_members,
                client_threads: args.client_threads,
            },
            setup_s: measurements.setup_took.as_secs_f64(),
            sends,
            fanout,
            initial_sync_ms: summarize_ns(&mut initial),
            sync: Syncs {
                long_pollers: measurements.receivers.len() as u64,
                responses_per_sec: responses_in_window as f64 / window.seconds().max(f64::MIN_POSITIVE),
                responses_in_window,
                requests: sync_requests,
                errors: sync_errors,
                by_instance,
                from_memory,
                from_database,
            },
            replication,
            memory,
            cpu,
            processes: process_reports,
            setup_rate_limited: measurements.setup_rate_limited,
            targets,
            push: None,
        }
    }

    /// The human-readable report.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let config = &self.config;
        let pid = match (self.processes.len(), self.server.pid) {
            (0 | 1, Some(pid)) => format!(" (pid {pid})"),
            (count, Some(pid)) => format!(" ({count} processes, master pid {pid})"),
            (_, None) => String::new(),
        };
        let sync_workers = match self.server.sync_workers {
            Some(1) => ", 1 sync worker".to_owned(),
            Some(count) => format!(", {count} sync workers"),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "ganglion-load: {} server at {}{pid}{sync_workers}",
            self.server.backend, self.server.base_url,
        );
        let population = match config.devices_per_user {
            Some(devices_per_user) => format!(
                "{} users with {devices_per_user} devices each ({:.0} devices), {} senders each sending one \
                 to-device message to every device",
                config.users, config.mean_members_per_room, config.senders
            ),
            None => {
                let syncing = match (config.syncing_users, config.mean_syncing_members_per_room) {
                    (Some(syncing), Some(per_room)) if syncing < config.users => {
                        format!(" ({syncing} long-polling /sync, {per_room:.1} of them per room)")
                    }
                    _ => String::new(),
                };
                format!(
                    "{} users{syncing} in {} {}rooms ({:.1} members per room), {} senders",
                    config.users,
                    config.rooms,
                    if config.encrypted { "encrypted " } else { "" },
                    config.mean_members_per_room,
                    config.senders
                )
            }
        };
        let _ = writeln!(
            out,
            "{population}{}; {:.1} s warm-up, {:.1} s measured; setup took {:.1} s",
            config.send_rate.map(|rate| format!(" (at most {rate} sends/s in all)")).unwrap_or_default(),
            config.warmup_s,
            config.duration_s,
            self.setup_s
        );
        let mut filter = Vec::new();
        if let Some(limit) = config.timeline_limit {
            filter.push(format!("timeline limit {limit}"));
        }
        if config.lazy_load_members {
            filter.push("lazy-loaded members".to_owned());
        }
        if !filter.is_empty() {
            let _ = writeln!(out, "/sync filter: {}", filter.join(", "));
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<26}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "latency (ms)", "p50", "p90", "p99", "max", "mean", "count"
        );
        let rows = [
            ("send", &self.sends.latency_ms),
            ("fan-out (from send)", &self.fanout.latency_ms),
            ("fan-out (after ack)", &self.fanout.after_ack_ms),
            ("initial sync", &self.initial_sync_ms),
        ];
        for (name, summary) in rows {
            match summary {
                Some(s) => {
                    let _ = writeln!(
                        out,
                        "{name:<26}{:>10.2}{:>10.2}{:>10.2}{:>10.2}{:>10.2}{:>10}",
                        s.p50, s.p90, s.p99, s.max, s.mean, s.count
                    );
                }
                None => {
                    let _ = writeln!(out, "{name:<26}{:>10}", "no samples");
                }
            }
        }
        if let Some(replication) = &self.replication {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{:<26}{:>10}{:>10}{:>10}{:>10}  following Redis (start/end)",
                "replication lag (ms)", "p50", "p99", "max", "samples"
            );
            for worker in &replication.workers {
                let following = |value: Option<bool>| match value {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "?",
                };
                match (&worker.lag_ms, &worker.error) {
                    (Some(lag), _) => {
                        let _ = writeln!(
                            out,
                            "{:<26}{:>10.2}{:>10.2}{:>10.2}{:>10}  {}/{}",
                            worker.name,
                            lag.p50,
                            lag.p99,
                            lag.max,
                            lag.samples,
                            following(worker.following_redis.0),
                            following(worker.following_redis.1)
                        );
                    }
                    (None, error) => {
                        let _ = writeln!(
                            out,
                            "{:<26}failed: {}",
                            worker.name,
                            error.as_deref().unwrap_or("no answer")
                        );
                    }
                }
            }
            match &replication.overall {
                Some(lag) => {
                    let _ = writeln!(
                        out,
                        "{:<26}{:>10.2}{:>10.2}{:>10.2}{:>10}",
                        "worst worker", lag.p50, lag.p99, lag.max, lag.samples
                    );
                }
                None => {
                    let _ = writeln!(out, "{:<26}{:>10}", "worst worker", "no samples");
                }
            }
        }
        let _ = writeln!(out);
        let sends = &self.sends;
        let _ = writeln!(
            out,
            "{:<26}{:.1} (slowest second {}, fastest {}); {} in window, {} in all",
            "sends/s",
            sends.per_sec,
            optional(sends.slowest_second.map(|n| n as f64), 0),
            optional(sends.fastest_second.map(|n| n as f64), 0),
            sends.ok_in_window,
            sends.ok_total
        );
        let fanout = &self.fanout;
        let _ = writeln!(
            out,
            "{:<26}{:.1} ({} received in window by {} long-pollers)",
            "deliveries/s", fanout.per_sec, fanout.in_window, self.sync.long_pollers
        );
        let _ = writeln!(
            out,
            "{:<26}{:.1} ({} incremental answers in window, {:.2} per long-poller per second)",
            "/sync responses/s",
            self.sync.responses_per_sec,
            self.sync.responses_in_window,
            self.sync.responses_per_sec / (self.sync.long_pollers.max(1) as f64)
        );
        let _ = writeln!(
            out,
            "{:<26}{} of {} expected: {} missing, {} duplicate, {} of failed sends; {} limited \
             timelines",
            "deliveries",
            fanout.delivered,
            fanout.expected,
            fanout.missing,
            fanout.duplicates,
            fanout.of_failed_sends,
            fanout.limited_timelines
        );
        if self.processes.len() > 1 || self.sync.by_instance.len() > 1 {
            let answers: Vec<String> = self
                .sync
                .by_instance
                .iter()
                .map(|entry| format!("{} {} ({} users)", entry.instance, entry.answers, entry.users))
                .collect();
            let _ = writeln!(out, "{:<26}{}", "sync answers by process", answers.join(", "));
        }
        if self.sync.from_memory + self.sync.from_database > 0 {
            let _ = writeln!(
                out,
                "{:<26}{} from memory, {} with the database",
                "sync answers", self.sync.from_memory, self.sync.from_database
            );
        }
        write_resources(&mut out, &self.memory, &self.cpu, &self.processes);
        let _ = writeln!(
            out,
            "{:<26}setup {}, send {}, sync {}",
            "429 answers (backed off)",
            self.setup_rate_limited,
            sends.errors.rate_limited,
            self.sync.errors.rate_limited
        );
        let _ = writeln!(
            out,
            "{:<26}send {}; sync {} ({} requests)",
            "failures",
            failure_summary(&sends.errors),
            failure_summary(&self.sync.errors),
            self.sync.requests
        );
        for (name, errors) in [("send", &sends.errors), ("sync", &self.sync.errors)] {
            if let Some(first) = &errors.first {
                let _ = writeln!(out, "{:<26}{first}", format!("first {name} failure"));
            }
        }
        if let Some(push) = &self.push {
            out.push_str(&push.table());
        }
        if self.targets.is_empty() {
            return out;
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<40}{:>12}{:>8}", "target (issue: 100 users, 20 rooms)", "value", "met");
        for check in &self.targets {
            let met = match check.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "n/a",
            };
            let _ = writeln!(
                out,
                "{:<40}{:>12}{:>8}",
                format!("{} {}", check.metric, check.target),
                optional(check.value, 1),
                met
            );
        }
        let _ = writeln!(out, "reference: {SYNAPSE_REFERENCE}");
        out
    }
}

fn sends(senders: &[SenderOutcome], window: Window) -> Sends {
    let mut latencies = Vec::new();
    let whole_seconds = window.seconds().floor() as usize;
    let mut per_second = vec![0_u64; whole_seconds];
    let mut ok_total = 0;
    let mut errors = ErrorCounts::default();
    for sender in senders {
        errors.merge(sender.errors.clone());
        for record in &sender.records {
            let Some(ack_ns) = record.ack_ns else {
                continue;
            };
            ok_total += 1;
            if !window.contains(ack_ns) {
                continue;
            }
            latencies.push(signed(ack_ns) - signed(record.start_ns));
            let second = ((ack_ns - window.start_ns) / 1_000_000_000) as usize;
            if let Some(count) = per_second.get_mut(second) {
                *count += 1;
            }
        }
    }
    let ok_in_window = latencies.len() as u64;
    Sends {
        per_sec: ok_in_window as f64 / window.seconds().max(f64::MIN_POSITIVE),
        slowest_second: per_second.iter().copied().min(),
        fastest_second: per_second.iter().copied().max(),
        ok_in_window,
        ok_total,
        latency_ms: summarize_ns(&mut latencies),
        errors,
    }
}

fn fanout(senders: &[SenderOutcome], receivers: &[ReceiverOutcome], window: Window) -> Fanout {
    let expected: u64 = senders
        .iter()
        .flat_map(|sender| &sender.records)
        .filter(|record| record.ack_ns.is_some())
        .map(|record| u64::from(record.other_members))
        .sum();
    let mut latencies = Vec::new();
    let mut after_ack = Vec::new();
    let (mut delivered, mut duplicates, mut of_failed_sends, mut limited_timelines) = (0, 0, 0, 0);
    let mut in_window = 0;
    for receiver in receivers {
        limited_timelines += receiver.limited_timelines;
        let mut deliveries = receiver.deliveries.clone();
        deliveries.sort_unstable_by_key(|d| (d.sender, d.seq, d.received_ns));
        let mut previous = None;
        for delivery in deliveries {
            let key = (delivery.sender, delivery.seq);
            if previous == Some(key) {
                duplicates += 1;
                continue;
            }
            previous = Some(key);
            if window.contains(delivery.received_ns) {
                in_window += 1;
            }
            let record = senders
                .get(delivery.sender as usize)
                .and_then(|sender| sender.records.get(delivery.seq as usize));
            let Some(ack_ns) = record.and_then(|record| record.ack_ns) else {
                of_failed_sends += 1;
                continue;
            };
            delivered += 1;
            if window.contains(delivery.ts_ns) {
                latencies.push(signed(delivery.received_ns) - signed(delivery.ts_ns));
                after_ack.push(signed(delivery.received_ns) - signed(ack_ns));
            }
        }
    }
    Fanout {
        per_sec: in_window as f64 / window.seconds().max(f64::MIN_POSITIVE),
        in_window,
        latency_ms: summarize_ns(&mut latencies),
        after_ack_ms: summarize_ns(&mut after_ack),
        expected,
        delivered,
        missing: expected.saturating_sub(delivered),
        duplicates,
        of_failed_sends,
        limited_timelines,
    }
}

/// Successful incremental `/sync` answers that arrived inside the window.
fn responses_in_window(receivers: &[ReceiverOutcome], window: Window) -> u64 {
    let answers = receivers.iter().flat_map(|receiver| &receiver.answers_ns);
    answers.filter(|&&received_ns| window.contains(received_ns)).count() as u64
}

/// Successful incremental syncs per answering process, and how many users each one answered.
fn answers_by_instance(receivers: &[ReceiverOutcome]) -> Vec<InstanceAnswers> {
    let mut all: Vec<InstanceAnswers> = Vec::new();
    for receiver in receivers {
        for (instance, answers) in &receiver.answers_by_instance {
            match all.iter_mut().find(|entry| entry.instance == *instance) {
                Some(entry) => {
                    entry.answers += answers;
                    entry.users += 1;
                }
                None => all.push(InstanceAnswers { instance: instance.clone(), answers: *answers, users: 1 }),
            }
        }
    }
    all.sort_by(|a, b| a.instance.cmp(&b.instance));
    all
}

/// Each worker's lag over the window (its answer at the end), and the worst of them.
fn replication(readings: &[WorkerReadings]) -> Option<Replication> {
    if readings.is_empty() {
        return None;
    }
    let workers: Vec<WorkerLag> = readings
        .iter()
        .map(|reading| {
            let error = match (&reading.start, &reading.end) {
                (Err(error), _) => Some(format!("at the window's start: {error}")),
                (Ok(_), Err(error)) => Some(format!("at the window's end: {error}")),
                (Ok(_), Ok(_)) => None,
            };
            WorkerLag {
                name: reading.name.clone(),
                following_redis: (
                    reading.start.as_ref().ok().map(|status| status.following_redis),
                    reading.end.as_ref().ok().map(|status| status.following_redis),
                ),
                positions: reading.end.as_ref().ok().map(|status| status.positions.clone()),
                // Without the reset at the start, the end's figures would cover the warm-up too.
                lag_ms: match (&reading.start, &reading.end) {
                    (Ok(_), Ok(end)) => Some(end.lag_ms),
                    _ => None,
                },
                error,
            }
        })
        .collect();
    let with_samples: Vec<Lag> =
        workers.iter().filter_map(|worker| worker.lag_ms).filter(|lag| lag.samples > 0).collect();
    let overall = (!with_samples.is_empty()).then(|| Lag {
        samples: with_samples.iter().map(|lag| lag.samples).sum(),
        p50: with_samples.iter().map(|lag| lag.p50).fold(f64::MIN, f64::max),
        p99: with_samples.iter().map(|lag| lag.p99).fold(f64::MIN, f64::max),
        max: with_samples.iter().map(|lag| lag.max).fold(f64::MIN, f64::max),
    });
    let failed_workers = workers.iter().filter(|worker| worker.error.is_some()).count() as u64;
    Some(Replication { workers, overall, failed_workers })
}

/// Memory and CPU over the window, summed and per process.
fn resources(usage: &Usage, window: Window) -> (Memory, Cpu, Vec<ProcessReport>) {
    let processes = &usage.processes;
    let rss_at_end_bytes = sum(processes.iter().map(|process| process.rss_at_end_bytes));
    let rss_max_in_window = usage
        .rss_samples
        .iter()
        .filter(|(at_ns, _)| window.contains(*at_ns))
        .map(|&(_, bytes)| bytes)
        .chain(rss_at_end_bytes)
        .max();
    let memory = Memory {
        rss_mib: rss_at_end_bytes.map(to_mib),
        rss_max_in_window_mib: rss_max_in_window.map(to_mib),
        rss_peak_mib: sum(processes.iter().map(|process| process.peak_rss_bytes)).map(to_mib),
    };
    let window_seconds = window.seconds();
    let per_second = |seconds: Option<f64>| seconds.map(|seconds| seconds / window_seconds);
    let cpu = Cpu {
        server_cores: per_second(sum(processes.iter().map(|process| process.cpu_seconds))),
        database_cores: per_second(usage.database_cpu_seconds),
        redis_cores: per_second(usage.redis_cpu_seconds),
        nginx_cores: per_second(usage.nginx_cpu_seconds),
        load_tool_cores: per_second(usage.client_cpu_seconds),
    };
    let process_reports = processes
        .iter()
        .map(|process| ProcessReport {
            name: process.name.clone(),
            role: process.role.clone(),
            pid: process.pid,
            rss_mib: process.rss_at_end_bytes.map(to_mib),
            rss_peak_mib: process.peak_rss_bytes.map(to_mib),
            cpu_cores: per_second(process.cpu_seconds),
        })
        .collect();
    (memory, cpu, process_reports)
}

/// The table's lines for [`resources`].
fn write_resources(out: &mut String, memory: &Memory, cpu: &Cpu, processes: &[ProcessReport]) {
    let summed =
        if processes.len() > 1 { format!(" (sum of {} processes)", processes.len()) } else { String::new() };
    let _ = writeln!(
        out,
        "{:<26}{} at end, {} max in window, {} peak (VmHWM){summed}",
        "server RSS",
        mib(memory.rss_mib),
        mib(memory.rss_max_in_window_mib),
        mib(memory.rss_peak_mib)
    );
    let mut others = String::new();
    for (name, cores) in
        [("PostgreSQL", cpu.database_cores), ("Redis", cpu.redis_cores), ("nginx", cpu.nginx_cores)]
    {
        if let Some(cores) = cores {
            let _ = write!(others, ", {name} {cores:.2}");
        }
    }
    let _ = writeln!(
        out,
        "{:<26}server {}{summed}{others}, load tool {} (cores)",
        "CPU in window",
        optional(cpu.server_cores, 2),
        optional(cpu.load_tool_cores, 2)
    );
    if processes.len() > 1 {
        for process in processes {
            let _ = writeln!(
                out,
                "{:<26}{:<14} pid {:<8} RSS {:>10}, peak {:>10}, CPU {} cores",
                format!("  {}", process.name),
                process.role,
                process.pid,
                mib(process.rss_mib),
                mib(process.rss_peak_mib),
                optional(process.cpu_cores, 2)
            );
        }
    }
}

/// Sums readings, skipping missing ones; `None` when every one is missing.
fn sum<T: std::iter::Sum<T>>(values: impl Iterator<Item = Option<T>>) -> Option<T> {
    let mut values = values.flatten().peekable();
    values.peek()?;
    Some(values.sum())
}

/// The targets. They are stated for 100 users in 20 rooms; RSS has a target only on
/// the embedded default (SQLite), and a server behind --url is held to the SQLite targets. A
/// cluster (on PostgreSQL) is held to PostgreSQL's throughput target, which is also the rate at
/// which its replication lag target (p99 < 10 ms, worst worker) is stated.
fn targets(
    backend: &str,
    sends: &Sends,
    fanout: &Fanout,
    memory: &Memory,
    replication: Option<&Replication>,
) -> Vec<TargetCheck> {
    let postgres = backend == "postgres" || backend == "cluster";
    let sends_target = if postgres { 1000.0 } else { 2000.0 };
    let mut checks = vec![
        TargetCheck {
            metric: "sends/s",
            target: format!(">= {sends_target:.0}"),
            value: Some(sends.per_sec),
            met: Some(sends.per_sec >= sends_target),
        },
        below("send p99 ms", 20.0, sends.latency_ms.map(|summary| summary.p99)),
        below("fan-out p99 ms", 15.0, fanout.latency_ms.map(|summary| summary.p99)),
    ];
    if !postgres {
        checks.push(below("server RSS MiB", 100.0, memory.rss_max_in_window_mib));
    }
    if let Some(replication) = replication {
        checks.push(below("replication lag p99 ms", 10.0, replication.overall.map(|lag| lag.p99)));
    }
    checks
}

fn below(metric: &'static str, limit: f64, value: Option<f64>) -> TargetCheck {
    TargetCheck { metric, target: format!("< {limit:.0}"), value, met: value.map(|value| value < limit) }
}

fn failure_summary(errors: &ErrorCounts) -> String {
    if errors.failures() == 0 {
        return "none".to_owned();
    }
    let mut parts: Vec<String> =
        errors.by_status.iter().map(|(status, count)| format!("{count}x {status}")).collect();
    if errors.transport > 0 {
        parts.push(format!("{}x transport", errors.transport));
    }
    if errors.bad_body > 0 {
        parts.push(format!("{}x unparseable body", errors.bad_body));
    }
    format!("{} ({})", errors.failures(), parts.join(", "))
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(value) => format!("{value:.decimals$}"),
        None => "n/a".to_owned(),
    }
}

fn mib(value: Option<f64>) -> String {
    match value {
        Some(value) => format!("{value:.1} MiB"),
        None => "n/a".to_owned(),
    }
}

fn to_mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

fn signed(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
