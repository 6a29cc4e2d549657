//! Command-line arguments. Parsing only: nothing here talks to a server.

use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Registers users, puts them in rooms, sends messages from concurrent closed-loop senders while
/// every user (or the first --syncing-users of them) long-polls `/sync`, and reports sends/s,
/// deliveries/s, /sync responses/s, send latency, fan-out latency, initial sync time and server
/// RSS and CPU. Works against any homeserver (Synapse included) with --url. Other workloads
/// (--workload) send to-device messages to many devices, or claim and query end-to-end encryption
/// keys.
#[derive(Debug, Parser)]
#[command(name = "ganglion-load", version)]
pub struct Args {
    /// What to measure. `rooms`: messages into rooms, fanned out to every member's /sync.
    /// `to-device`: each sender sends one to-device message to every device of every user
    /// (--users x --devices-per-user devices, each long-polling /sync). `keys-claim` and
    /// `keys-query`: --senders clients call /keys/claim or /keys/query in closed loops against
    /// devices that published one-time keys. `first-list`: time to the first room list (20
    /// rooms) of a user in each of --room-counts rooms, simplified sliding sync (MSC4186) as
    /// Element X asks for it against `/sync` v2's initial sync. `live-update`: --users clients
    /// long-poll simplified sliding sync in one shared room while --messages messages are sent
    /// one at a time; reports the delivery time to all of them and the server's CPU per message.
    /// `media`: --senders clients upload and download 4 KiB files, then one large file
    /// (--media-mib) goes up and down, thumbnails are asked for twice, and fresh files are
    /// downloaded twice (the first scanned, when the server scans).
    #[arg(long, value_enum, default_value_t = Workload::Rooms)]
    pub workload: Workload,

    /// Rooms workload: create the rooms with `m.room.encryption` (megolm) in their initial state
    /// and send `m.room.encrypted` events shaped like megolm ones instead of `m.room.message`.
    #[arg(long)]
    pub encrypted: bool,

    /// Devices of each user in the to-device and keys workloads (default 1): the first comes
    /// with registration, each other one from a password login.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub devices_per_user: Option<u32>,

    /// Keys workloads: devices asked for one key each in one /keys/claim, or users asked for in
    /// one /keys/query (default 10).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub keys_per_request: Option<u32>,

    /// First-list workload: the user's room counts to measure at, ascending (default
    /// 100,1000,5000). The same user gets rooms added up to each count in turn.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    pub room_counts: Vec<u32>,

    /// First-list workload: warm measurements of each request after the cold one (default 5).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeats: Option<u32>,

    /// Media workload: the large file's size in MiB (default 32).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub media_mib: Option<u32>,

    /// With --spawn: TOML appended to the spawned server's config, e.g. `[media]` with `clamd`
    /// to measure antivirus scanning.
    #[arg(long)]
    pub server_toml: Option<String>,

    /// Live-update workload: messages sent, one at a time (default 20).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub messages: Option<u32>,

    /// Base URL of a running homeserver, e.g. http://127.0.0.1:8008: Ganglion, Synapse or any
    /// other. It must allow registration through the `m.login.dummy` stage and not rate-limit
    /// the load (scripts/synapse-bench.sh configures Synapse so).
    #[arg(long, conflicts_with = "spawn", required_unless_present = "spawn")]
    pub url: Option<String>,

    /// Start a throwaway server with ganglion-testkit on this backend (PostgreSQL gets a
    /// throwaway database). `cluster` starts PostgreSQL, Redis, the master, the sync workers
    /// (--sync-workers), two client-readers and nginx, and drives the cluster through nginx.
    /// Everything is stopped when the run ends.
    #[arg(long, value_enum)]
    pub spawn: Option<SpawnBackend>,

    /// Sync workers of a `--spawn cluster` (1 or 2; default 2). With 1, nginx sends every
    /// `/sync` to the one worker.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=2))]
    pub sync_workers: Option<u32>,

    /// Process ID of the server behind --url, to read its RSS and CPU time from /proc. Repeat it
    /// (or separate PIDs with commas) for a server of several processes, e.g. Synapse's workers:
    /// the figures are summed and also given per process.
    #[arg(long, conflicts_with = "spawn", value_delimiter = ',')]
    pub server_pid: Vec<u32>,

    /// Process ID of the PostgreSQL postmaster behind --url, if the server uses one: the CPU time
    /// of it and its backends (its direct children) is reported beside the server's, as for
    /// --spawn postgres.
    #[arg(long, conflicts_with = "spawn")]
    pub database_pid: Option<u32>,

    /// Number of users. In the rooms workload each one (or the first --syncing-users) runs a /sync
    /// long-poll loop; in the to-device workload each of their devices does.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub users: u32,

    /// Number of rooms (rooms workload).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub rooms: u32,

    /// Rooms each user joins; a room then has about users * rooms-per-user / rooms members.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rooms_per_user: u32,

    /// Rooms workload: only this many users run the /sync long-poll loop (default: all). They are
    /// the FIRST N users (user 0 to N-1): users join rooms in a sequence that wraps evenly around
    /// the rooms, so the first N users' memberships are spread evenly too and every room gets
    /// about N * rooms-per-user / rooms syncing members. The others only send or idle. Fan-out
    /// latency, deliveries/s and the exactly-once check cover the syncing members only.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub syncing_users: Option<u32>,

    /// Rooms workload: every syncing user also sets an HTTP pusher to a push gateway this tool
    /// runs on 127.0.0.1, and the report adds the pushes it took, per second (per pusher worker
    /// of a cluster), duplicates, and the latency from send to gateway. A spawned server is
    /// configured to allow a loopback gateway (`push.allowed_address_ranges`); a server behind
    /// --url must allow it itself.
    #[arg(long)]
    pub push: bool,

    /// `--spawn cluster` with --push: pusher workers (0 to 2; default 1). With 0 the master
    /// pushes.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=2))]
    pub pusher_workers: Option<u32>,

    /// Concurrent closed-loop senders. Sender i sends as user i mod users, round-robin over that
    /// user's rooms; with --syncing-users below --users, the senders alternate between syncing
    /// and non-syncing users in proportion (the syncing ones taken from user 0 up, the others
    /// from user N up), so both kinds send and every room gets messages. In the to-device
    /// workload each sender is a user of its own; in the keys workloads these are the clients
    /// calling /keys/claim or /keys/query, users of their own.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub senders: u32,

    /// Cap on sends per second over all senders: each sender then sends at most every
    /// senders / rate seconds (staggered), still waiting for each answer before the next send.
    /// Without it, senders send as fast as the server answers. Many paced senders spread a modest
    /// rate over many rooms, so that every user receives messages.
    #[arg(long, value_parser = parse_rate)]
    pub send_rate: Option<f64>,

    /// Length of the measured window (after the warm-up), e.g. 30s, 2m, 500ms.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Sending time before the measured window starts; nothing sent in it is counted.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Longest wait, once senders stop, for every member's /sync to receive every sent message.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain: Duration,

    /// Ask /sync for this timeline limit with an inline filter, so that a busy room's timeline is
    /// not cut short (`limited`). Without it the server's default limit applies.
    #[arg(long)]
    pub timeline_limit: Option<u32>,

    /// Ask /sync for lazy-loaded members with the inline filter (`"room": {"state":
    /// {"lazy_load_members": true}}`, beside --timeline-limit's timeline limit), as clients do.
    #[arg(long)]
    pub lazy_load_members: bool,

    /// Concurrent requests while registering users, creating rooms and joining them.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub setup_concurrency: u32,

    /// Tokio worker threads for the load tool itself (default: one per core). The tool shares
    /// the machine with the server; its own CPU use is reported so that a saturated client shows.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub client_threads: Option<u32>,

    /// Print one JSON object on stdout instead of the table. Progress still goes to stderr.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    Rooms,
    ToDevice,
    KeysClaim,
    KeysQuery,
    FirstList,
    LiveUpdate,
    Media,
}

impl Workload {
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Rooms => "rooms",
            Workload::ToDevice => "to-device",
            Workload::KeysClaim => "keys-claim",
            Workload::KeysQuery => "keys-query",
            Workload::FirstList => "first-list",
            Workload::LiveUpdate => "live-update",
            Workload::Media => "media",
        }
    }

    fn is_keys(self) -> bool {
        matches!(self, Workload::KeysClaim | Workload::KeysQuery)
    }

    fn is_sliding(self) -> bool {
        matches!(self, Workload::FirstList | Workload::LiveUpdate)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SpawnBackend {
    Sqlite,
    Postgres,
    Cluster,
}

impl SpawnBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            SpawnBackend::Sqlite => "sqlite",
            SpawnBackend::Postgres => "postgres",
            SpawnBackend::Cluster => "cluster",
        }
    }
}

/// The number of sync workers when none is asked for.
pub const DEFAULT_SYNC_WORKERS: u32 = 2;
/// Devices per user when none is asked for.
const DEFAULT_DEVICES_PER_USER: u32 = 1;
/// Devices per /keys/claim, users per /keys/query, when none is asked for.
const DEFAULT_KEYS_PER_REQUEST: u32 = 10;

impl Args {
    /// Checks what clap cannot: --sync-workers only with `--spawn cluster`, and each workload's
    /// flags only with that workload.
    pub fn validate(&self) -> Result<(), String> {
        if self.sync_workers.is_some() && self.spawn != Some(SpawnBackend::Cluster) {
            return Err("--sync-workers needs --spawn cluster".to_owned());
        }
        if self.encrypted && self.workload != Workload::Rooms {
            return Err("--encrypted goes with --workload rooms".to_owned());
        }
        if self.devices_per_user.is_some() && self.workload == Workload::Rooms {
            return Err(
                "--devices-per-user goes with --workload to-device, keys-claim or keys-query".to_owned()
            );
        }
        if self.keys_per_request.is_some() && !self.workload.is_keys() {
            return Err("--keys-per-request goes with --workload keys-claim or keys-query".to_owned());
        }
        if self.send_rate.is_some() && (self.workload.is_keys() || self.workload.is_sliding()) {
            return Err("--send-rate goes with --workload rooms or to-device".to_owned());
        }
        if (!self.room_counts.is_empty() || self.repeats.is_some()) && self.workload != Workload::FirstList {
            return Err("--room-counts and --repeats go with --workload first-list".to_owned());
        }
        if self.room_counts.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err("--room-counts must be ascending".to_owned());
        }
        if self.server_toml.is_some() && self.spawn.is_none() {
            return Err("--server-toml goes with --spawn".to_owned());
        }
        if self.media_mib.is_some() && self.workload != Workload::Media {
            return Err("--media-mib goes with --workload media".to_owned());
        }
        if self.messages.is_some() && self.workload != Workload::LiveUpdate {
            return Err("--messages goes with --workload live-update".to_owned());
        }
        if self.lazy_load_members && (self.workload.is_keys() || self.workload.is_sliding()) {
            return Err("--lazy-load-members goes with --workload rooms or to-device".to_owned());
        }
        if self.push && self.workload != Workload::Rooms {
            return Err("--push goes with --workload rooms".to_owned());
        }
        if self.pusher_workers.is_some() && !(self.push && self.spawn == Some(SpawnBackend::Cluster)) {
            return Err("--pusher-workers needs --push and --spawn cluster".to_owned());
        }
        if let Some(syncing) = self.syncing_users {
            if self.workload != Workload::Rooms {
                return Err("--syncing-users goes with --workload rooms".to_owned());
            }
            if syncing > self.users {
                return Err(format!("--syncing-users {syncing} is more than --users {}", self.users));
            }
        }
        Ok(())
    }

    /// The users who long-poll `/sync` in the rooms workload: the first this many.
    pub fn syncing_users(&self) -> u32 {
        self.syncing_users.unwrap_or(self.users).min(self.users)
    }

    pub fn devices_per_user(&self) -> u32 {
        self.devices_per_user.unwrap_or(DEFAULT_DEVICES_PER_USER)
    }

    pub fn room_counts(&self) -> Vec<u32> {
        if self.room_counts.is_empty() { vec![100, 1_000, 5_000] } else { self.room_counts.clone() }
    }

    pub fn repeats(&self) -> u32 {
        self.repeats.unwrap_or(5)
    }

    pub fn messages(&self) -> u32 {
        self.messages.unwrap_or(20)
    }

    pub fn keys_per_request(&self) -> u32 {
        self.keys_per_request.unwrap_or(DEFAULT_KEYS_PER_REQUEST)
    }

    /// The pusher workers a spawned cluster runs with; `None` unless `--push --spawn cluster`.
    pub fn cluster_pusher_workers(&self) -> Option<u32> {
        (self.push && self.spawn == Some(SpawnBackend::Cluster)).then(|| self.pusher_workers.unwrap_or(1))
    }

    /// The sync workers a spawned cluster runs with; `None` for anything but `--spawn cluster`.
    pub fn cluster_sync_workers(&self) -> Option<u32> {
        (self.spawn == Some(SpawnBackend::Cluster)).then(|| self.sync_workers.unwrap_or(DEFAULT_SYNC_WORKERS))
    }
}

/// A positive, finite number of sends per second.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("`{text}` is not a positive number of sends per second")),
    }
}

/// Parses `30s`, `500ms`, `2m`, `1.5s`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split_at = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split_at);
    let value: f64 =
        number.parse().map_err(|_| format!("`{text}` is not a duration such as 30s, 500ms or 2m"))?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit `{other}` in `{text}`; use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|error| format!("`{text}`: {error}"))
}

#[cfg(test)]
mod tests;
