//! The server under load: either one already running at `--url`, or a throwaway one (a single
//! process or a whole cluster) started through `spawn`. Dropping a spawned server stops it.

use crate::cli::Args;
use crate::spawn::Spawned;

/// A `ganglion` process whose RSS and CPU time are reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerProcess {
    /// `ganglion` for a single process; a cluster's process name (`master`, `sync1`, …).
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
    /// first). Empty behind --url without --server-pid.
    pub processes: Vec<ServerProcess>,
    /// A spawned PostgreSQL's postmaster, whose process tree's CPU time is reported.
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
            let spawned = crate::spawn::start(backend, args.cluster_sync_workers()).await?;
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
        Ok(Server {
            base_url: url.clone(),
            processes: args
                .server_pid
                .map(|pid| ServerProcess { name: "ganglion".to_owned(), role: "unknown".to_owned(), pid })
                .into_iter()
                .collect(),
            database_pid: None,
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
