//! The server under load: either one already running at `--url`, or a throwaway one (a single
//! process or a whole cluster) started through `spawn`. Dropping a spawned server stops it.

use crate::cli::Args;
use crate::procfs::Process;
use crate::spawn::Spawned;

/// A server process whose RSS and CPU time are reported: `ganglion`, or behind --url any
/// server's (Synapse's `python`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerProcess {
    /// `ganglion` for a single process; a cluster's process name (`master`, `sync1`, …); behind
    /// --url the command name from /proc (`ganglion`, `python3`, …).
    pub name: String,
    /// `all` (the embedded default), `master`, `sync` or `client-reader`; `unknown` behind --url.
    pub role: String,
    pub pid: u32,
}

/// A cluster worker's own URL (not nginx's), for `GET /_ganglion/v1/replication`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    pub name: String,
    pub url: String,
}

pub struct Server {
    pub base_url: String,
    /// Every `ganglion` process: one for the embedded server, all of a cluster's (master
    /// first). Behind --url, those given with --server-pid (none without it).
    pub processes: Vec<ServerProcess>,
    /// A spawned PostgreSQL's postmaster (or --database-pid's), whose process tree's CPU time is
    /// reported.
    pub database_pid: Option<u32>,
    /// A spawned cluster's Redis and nginx (master; its workers are counted with it).
    pub redis_pid: Option<u32>,
    pub nginx_pid: Option<u32>,
    /// A spawned cluster's workers, whose replication lag is reported; empty otherwise.
    pub workers: Vec<Worker>,
    /// A spawned cluster's number of sync workers.
    pub sync_workers: Option<u32>,
    /// `sqlite`, `postgres`, `cluster`, or `url` for a server started elsewhere.
    pub backend: &'static str,
    /// Keeps a spawned server alive until the `Server` is dropped.
    _spawned: Option<Spawned>,
}

impl Server {
    pub async fn start(args: &Args) -> anyhow::Result<Server> {
        if let Some(backend) = args.spawn {
            let toml = server_toml(args);
            let workers = (args.cluster_sync_workers(), args.cluster_pusher_workers());
            let spawned = crate::spawn::start(backend, workers.0, workers.1, toml.as_deref()).await?;
            return Ok(Server {
                base_url: spawned.base_url.clone(),
                processes: spawned.processes.clone(),
                database_pid: spawned.database_pid,
                redis_pid: spawned.redis_pid,
                nginx_pid: spawned.nginx_pid,
                workers: spawned.workers.clone(),
                sync_workers: args.cluster_sync_workers(),
                backend: backend.as_str(),
                _spawned: Some(spawned),
            });
        }
        let Some(url) = &args.url else {
            anyhow::bail!("either --url or --spawn is required");
        };
        // A mistyped PID would only show as "n/a" at the end of the run.
        if Process::This.cpu_seconds().is_some() {
            if let Some(pid) = args.server_pid.iter().find(|&&pid| Process::Pid(pid).cpu_seconds().is_none())
            {
                anyhow::bail!("--server-pid {pid}: no such process");
            }
            if let Some(pid) = args.database_pid.filter(|&pid| Process::Pid(pid).cpu_seconds().is_none()) {
                anyhow::bail!("--database-pid {pid}: no such process");
            }
        }
        Ok(Server {
            base_url: url.clone(),
            processes: args
                .server_pid
                .iter()
                .map(|&pid| ServerProcess {
                    name: Process::Pid(pid).command_name().unwrap_or_else(|| "server".to_owned()),
                    role: "unknown".to_owned(),
                    pid,
                })
                .collect(),
            database_pid: args.database_pid,
            redis_pid: None,
            nginx_pid: None,
            workers: Vec::new(),
            sync_workers: None,
            backend: "url",
            _spawned: None,
        })
    }

    /// The process named in the report's header: the only one, or a cluster's master.
    pub fn main_pid(&self) -> Option<u32> {
        self.processes.first().map(|process| process.pid)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(|process| process.pid).collect()
    }
}

/// --server-toml, with `--push`'s loopback gateway allowed (in the user's `[push]` table if
/// they gave one).
fn server_toml(args: &Args) -> Option<String> {
    const ALLOW: &str = "allowed_address_ranges = [\"127.0.0.0/8\"]";
    let given = args.server_toml.clone();
    if !args.push {
        return given;
    }
    let given = given.unwrap_or_default();
    Some(match given.lines().any(|line| line.trim() == "[push]") {
        true => given.replacen("[push]", &format!("[push]\n{ALLOW}"), 1),
        false => format!("{given}\n[push]\n{ALLOW}\n"),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::server_toml;
    use crate::cli::Args;

    fn args(extra: &[&str]) -> Args {
        let mut args = vec!["ganglion-load", "--spawn", "sqlite"];
        args.extend_from_slice(extra);
        Args::try_parse_from(args).unwrap()
    }

    #[test]
    fn push_allows_the_loopback_gateway_in_the_spawned_config() {
        assert_eq!(server_toml(&args(&[])), None);
        assert_eq!(server_toml(&args(&["--server-toml", "a = 1"])).as_deref(), Some("a = 1"));
        let allow = "allowed_address_ranges = [\"127.0.0.0/8\"]";
        let alone = server_toml(&args(&["--push"])).unwrap();
        assert!(alone.contains(&format!("[push]\n{allow}\n")), "{alone}");
        // The user's own [push] table gets the line, rather than a second table.
        let merged = server_toml(&args(&["--push", "--server-toml", "[push]\nenabled = false"])).unwrap();
        assert_eq!(merged, format!("[push]\n{allow}\nenabled = false"));
    }
}
