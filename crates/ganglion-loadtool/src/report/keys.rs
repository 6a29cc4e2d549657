//! The report of the keys workloads: requests/s and latency of `/keys/claim` or `/keys/query`,
//! the top-up uploads, what the claims got, and what the server used. Same window rule as the
//! messages report: a request counts when its 2xx arrived inside the measured window.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::{
    Cpu, Memory, ProcessReport, Sends, ServerInfo, Usage, Window, failure_summary, optional, resources,
    sends, write_resources,
};
use crate::cli::Args;
use crate::matrix::KeysEndpoint;
use crate::sender::SenderOutcome;

/// Everything a keys run recorded.
pub struct KeysMeasurements {
    pub backend: &'static str,
    pub base_url: String,
    pub server_pid: Option<u32>,
    pub sync_workers: Option<u32>,
    /// Devices that published keys.
    pub devices: usize,
    pub setup_took: Duration,
    pub setup_rate_limited: u64,
    pub window: Window,
    /// What the clients call: `Claim` or `Query`.
    pub endpoint: KeysEndpoint,
    /// One entry per client.
    pub requests: Vec<SenderOutcome>,
    /// keys-claim: one entry per device's top-ups.
    pub uploads: Option<Vec<SenderOutcome>>,
    pub claimed: Option<ClaimTally>,
    pub usage: Usage,
}

/// What the claims of the whole run (warm-up included) got, per device asked.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct ClaimTally {
    pub one_time: u64,
    /// The device had no one-time key left: its top-up was late.
    pub fallback: u64,
    /// Nothing at all for the device.
    pub none: u64,
}

impl ClaimTally {
    pub fn add(&mut self, other: &ClaimTally) {
        self.one_time += other.one_time;
        self.fallback += other.fallback;
        self.none += other.none;
    }
}

#[derive(Debug, Serialize)]
pub struct KeysReport {
    pub server: ServerInfo,
    pub config: KeysConfig,
    pub setup_s: f64,
    /// The clients' requests to `endpoint`; `latency_ms` is each request's round trip.
    pub requests: Sends,
    /// keys-claim: the devices' top-ups (`/keys/upload` of 100 one-time keys each).
    pub uploads: Option<Sends>,
    pub claimed: Option<ClaimTally>,
    pub memory: Memory,
    pub cpu: Cpu,
    pub processes: Vec<ProcessReport>,
    pub setup_rate_limited: u64,
}

#[derive(Debug, Serialize)]
pub struct KeysConfig {
    /// `keys-claim` or `keys-query`.
    pub workload: &'static str,
    /// `/keys/claim` or `/keys/query`.
    pub endpoint: String,
    pub users: u32,
    pub devices_per_user: u32,
    pub devices: usize,
    /// Concurrent closed-loop clients (--senders).
    pub clients: u32,
    /// Devices per claim, or users per query.
    pub keys_per_request: u32,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub client_threads: Option<u32>,
}

impl KeysReport {
    pub fn new(args: &Args, measurements: KeysMeasurements) -> KeysReport {
        let window = measurements.window;
        let (memory, cpu, processes) = resources(&measurements.usage, window);
        KeysReport {
            server: ServerInfo {
                backend: measurements.backend,
                base_url: measurements.base_url,
                pid: measurements.server_pid,
                sync_workers: measurements.sync_workers,
            },
            config: KeysConfig {
                workload: args.workload.as_str(),
                endpoint: format!("/keys/{}", measurements.endpoint.as_str()),
                users: args.users,
                devices_per_user: args.devices_per_user(),
                devices: measurements.devices,
                clients: args.senders,
                keys_per_request: args.keys_per_request(),
                warmup_s: args.warmup.as_secs_f64(),
                duration_s: args.duration.as_secs_f64(),
                client_threads: args.client_threads,
            },
            setup_s: measurements.setup_took.as_secs_f64(),
            requests: sends(&measurements.requests, window),
            uploads: measurements.uploads.map(|uploads| sends(&uploads, window)),
            claimed: measurements.claimed,
            memory,
            cpu,
            processes,
            setup_rate_limited: measurements.setup_rate_limited,
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
        let _ =
            writeln!(out, "ganglion-load: {} server at {}{pid}", self.server.backend, self.server.base_url);
        let asked = if config.workload == "keys-query" { "users" } else { "devices" };
        let _ = writeln!(
            out,
            "{}: {} users with {} devices each ({} devices with keys), {} clients calling {} for {} {asked} \
             each; {:.1} s warm-up, {:.1} s measured; setup took {:.1} s",
            config.workload,
            config.users,
            config.devices_per_user,
            config.devices,
            config.clients,
            config.endpoint,
            config.keys_per_request,
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
        let mut rows = vec![(config.endpoint.clone(), &self.requests)];
        if let Some(uploads) = &self.uploads {
            rows.push(("/keys/upload (top-up)".to_owned(), uploads));
        }
        for (name, requests) in &rows {
            match &requests.latency_ms {
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
        for (name, requests) in &rows {
            let _ = writeln!(
                out,
                "{name:<26}{:.1} requests/s (slowest second {}, fastest {}); {} in window, {} in all",
                requests.per_sec,
                optional(requests.slowest_second.map(|n| n as f64), 0),
                optional(requests.fastest_second.map(|n| n as f64), 0),
                requests.ok_in_window,
                requests.ok_total
            );
        }
        if let Some(claimed) = &self.claimed {
            let _ = writeln!(
                out,
                "{:<26}{} one-time, {} fallback (none left), {} nothing",
                "keys claimed", claimed.one_time, claimed.fallback, claimed.none
            );
        }
        write_resources(&mut out, &self.memory, &self.cpu, &self.processes);
        let rate_limited: Vec<String> =
            rows.iter().map(|(name, requests)| format!("{name} {}", requests.errors.rate_limited)).collect();
        let _ = writeln!(
            out,
            "{:<26}setup {}, {}",
            "429 answers (retried)",
            self.setup_rate_limited,
            rate_limited.join(", ")
        );
        let failures: Vec<String> = rows
            .iter()
            .map(|(name, requests)| format!("{name} {}", failure_summary(&requests.errors)))
            .collect();
        let _ = writeln!(out, "{:<26}{}", "failures", failures.join("; "));
        for (name, requests) in &rows {
            if let Some(first) = &requests.errors.first {
                let _ = writeln!(out, "{:<26}{first}", format!("first {name} failure"));
            }
        }
        out
    }
}
