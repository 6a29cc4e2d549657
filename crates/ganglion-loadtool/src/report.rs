//! Turns a run's raw records into the figures the issue asks for, as one JSON object or a table.
//!
//! Window rules: a send counts when its 2xx arrived inside the measured window; a fan-out sample
//! counts when the message's `ts_ns` (taken just before its PUT) is inside the window. Completeness
//! (missing and duplicate deliveries) covers every acknowledged send, warm-up included.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::cli::Args;
use crate::matrix::ErrorCounts;
use crate::receiver::ReceiverOutcome;
use crate::sender::SenderOutcome;
use crate::stats::{Summary, summarize_ns};

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
    fn contains(self, ns: u64) -> bool {
        (self.start_ns..self.end_ns).contains(&ns)
    }

    fn seconds(self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9
    }
}

/// Everything a run recorded.
pub struct Measurements {
    pub backend: &'static str,
    pub base_url: String,
    pub server_pid: Option<u32>,
    pub mean_members: f64,
    pub setup_took: Duration,
    pub setup_rate_limited: u64,
    pub initial_sync_times: Vec<Duration>,
    pub window: Window,
    /// Indexed by sender number.
    pub senders: Vec<SenderOutcome>,
    pub receivers: Vec<ReceiverOutcome>,
    /// `(clock ns, bytes)`.
    pub rss_samples: Vec<(u64, u64)>,
    pub rss_at_end_bytes: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
    /// CPU seconds used during the window.
    pub server_cpu_seconds: Option<f64>,
    /// PostgreSQL's postmaster and backends, for a spawned PostgreSQL.
    pub database_cpu_seconds: Option<f64>,
    pub client_cpu_seconds: Option<f64>,
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
    pub memory: Memory,
    pub cpu: Cpu,
    /// Rate-limit answers during setup (register, createRoom, join), waited out and retried.
    pub setup_rate_limited: u64,
    pub targets: Vec<TargetCheck>,
}

#[derive(Debug, Serialize)]
pub struct ServerInfo {
    /// `sqlite` or `postgres` for a spawned server, `url` for one given with --url.
    pub backend: &'static str,
    pub base_url: String,
    pub pid: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct Config {
    pub users: u32,
    pub rooms: u32,
    pub rooms_per_user: u32,
    pub mean_members_per_room: f64,
    pub senders: u32,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub timeline_limit: Option<u32>,
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
    /// Deliveries owed: each acknowledged send times its room's other members.
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
    pub requests: u64,
    pub errors: ErrorCounts,
}

#[derive(Debug, Serialize)]
pub struct Memory {
    /// Server RSS at the end of the window.
    pub rss_mib: Option<f64>,
    /// Highest sampled RSS inside the window.
    pub rss_max_in_window_mib: Option<f64>,
    /// The kernel's high-water mark (VmHWM) over the server's life, read after the run.
    pub rss_peak_mib: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Cpu {
    /// CPU seconds per second of the window: 2.0 is both cores of a 2-core machine.
    pub server_cores: Option<f64>,
    /// The spawned PostgreSQL cluster (postmaster and backends); `null` otherwise.
    pub database_cores: Option<f64>,
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
        let mut initial: Vec<i64> = measurements
            .initial_sync_times
            .iter()
            .map(|took| i64::try_from(took.as_nanos()).unwrap_or(i64::MAX))
            .collect();
        let rss_max_in_window = measurements
            .rss_samples
            .iter()
            .filter(|(at_ns, _)| window.contains(*at_ns))
            .map(|&(_, bytes)| bytes)
            .chain(measurements.rss_at_end_bytes)
            .max();
        let memory = Memory {
            rss_mib: measurements.rss_at_end_bytes.map(to_mib),
            rss_max_in_window_mib: rss_max_in_window.map(to_mib),
            rss_peak_mib: measurements.peak_rss_bytes.map(to_mib),
        };
        let window_seconds = window.seconds();
        let cpu = Cpu {
            server_cores: measurements.server_cpu_seconds.map(|seconds| seconds / window_seconds),
            database_cores: measurements.database_cpu_seconds.map(|seconds| seconds / window_seconds),
            load_tool_cores: measurements.client_cpu_seconds.map(|seconds| seconds / window_seconds),
        };
        let targets = targets(measurements.backend, &sends, &fanout, &memory);
        Report {
            server: ServerInfo {
                backend: measurements.backend,
                base_url: measurements.base_url,
                pid: measurements.server_pid,
            },
            config: Config {
                users: args.users,
                rooms: args.rooms,
                rooms_per_user: args.rooms_per_user.min(args.rooms),
                mean_members_per_room: measurements.mean_members,
                senders: args.senders,
                warmup_s: args.warmup.as_secs_f64(),
                duration_s: args.duration.as_secs_f64(),
                timeline_limit: args.timeline_limit,
                client_threads: args.client_threads,
            },
            setup_s: measurements.setup_took.as_secs_f64(),
            sends,
            fanout,
            initial_sync_ms: summarize_ns(&mut initial),
            sync: Syncs { requests: sync_requests, errors: sync_errors },
            memory,
            cpu,
            setup_rate_limited: measurements.setup_rate_limited,
            targets,
        }
    }

    /// The human-readable report.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let config = &self.config;
        let _ = writeln!(
            out,
            "ganglion-load: {} server at {}{}",
            self.server.backend,
            self.server.base_url,
            self.server.pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "{} users in {} rooms ({:.1} members per room), {} senders; {:.1} s warm-up, {:.1} s \
             measured; setup took {:.1} s",
            config.users,
            config.rooms,
            config.mean_members_per_room,
            config.senders,
            config.warmup_s,
            config.duration_s,
            self.setup_s
        );
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
        let _ = writeln!(
            out,
            "{:<26}{} at end, {} max in window, {} peak (VmHWM)",
            "server RSS",
            mib(self.memory.rss_mib),
            mib(self.memory.rss_max_in_window_mib),
            mib(self.memory.rss_peak_mib)
        );
        let database = match self.cpu.database_cores {
            Some(cores) => format!(", PostgreSQL {cores:.2}"),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<26}server {}{database}, load tool {} (cores)",
            "CPU in window",
            optional(self.cpu.server_cores, 2),
            optional(self.cpu.load_tool_cores, 2)
        );
        let _ = writeln!(
            out,
            "{:<26}setup {}, send {}, sync {}",
            "429 answers (retried)",
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
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<36}{:>12}{:>8}", "target (issue: 100 users, 20 rooms)", "value", "met");
        for check in &self.targets {
            let met = match check.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "n/a",
            };
            let _ = writeln!(
                out,
                "{:<36}{:>12}{:>8}",
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

/// The targets. They are stated for 100 users in 20 rooms; RSS has a target only on
/// the embedded default (SQLite), and a server behind --url is held to the SQLite targets.
fn targets(backend: &str, sends: &Sends, fanout: &Fanout, memory: &Memory) -> Vec<TargetCheck> {
    let postgres = backend == "postgres";
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
