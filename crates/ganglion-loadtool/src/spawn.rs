//! Starts a throwaway `ganglion` (or a whole cluster) through ganglion-testkit, which also makes a
//! throwaway PostgreSQL database when asked for one. The only file that knows the testkit's API.
//!
//! The testkit finds the binary through `GANGLION_BIN`, else the newest of
//! `target/{debug,release}/ganglion`; `scripts/bench.sh` sets `GANGLION_BIN` to the release
//! build so that a newer debug build is never benchmarked by mistake.

use crate::cli::SpawnBackend;
use crate::server::{ServerProcess, Worker};

/// A running throwaway server; dropping it stops the server (for a cluster: every `ganglion`
/// process, Redis and nginx). The throwaway PostgreSQL cluster is stopped by the testkit when
/// this process exits.
pub struct Spawned {
    pub base_url: String,
    pub processes: Vec<ServerProcess>,
    /// The PostgreSQL postmaster, whose process tree's CPU time is reported too.
    pub database_pid: Option<u32>,
    pub redis_pid: Option<u32>,
    pub nginx_pid: Option<u32>,
    pub workers: Vec<Worker>,
    #[cfg(feature = "spawn")]
    _server: Option<ganglion_testkit::TestServer>,
    #[cfg(feature = "spawn")]
    _cluster: Option<ganglion_testkit::Cluster>,
}

/// Starts a server on `backend`; a cluster runs `sync_workers` sync workers (2 if `None`) and
/// `pusher_workers` pusher workers (none if `None`).
#[cfg(feature = "spawn")]
pub async fn start(
    backend: SpawnBackend,
    sync_workers: Option<u32>,
    pusher_workers: Option<u32>,
    extra_toml: Option<&str>,
) -> anyhow::Result<Spawned> {
    use ganglion_testkit::{Backend, Bucket, Cluster, Postgres, RateLimits, ServerOptions, TestServer};

    // The limiter stays on, so its cost is part of the figures, but with buckets no run can
    // drain: every request comes from 127.0.0.1, and the tool sends thousands a second.
    let unreachable = Bucket { per_second: 1_000_000.0, burst: 10_000_000 };
    let options = ServerOptions {
        registration: true,
        rate_limits: Some(RateLimits::all(unreachable)),
        extra_toml: extra_toml.unwrap_or_default().to_owned(),
        ..ServerOptions::default()
    };
    let testkit_backend = match backend {
        SpawnBackend::Sqlite => Backend::Sqlite,
        SpawnBackend::Postgres => Backend::Postgres,
        SpawnBackend::Cluster => {
            let sync_workers = sync_workers.unwrap_or(crate::cli::DEFAULT_SYNC_WORKERS) as usize;
            let pushers = pusher_workers.unwrap_or(0) as usize;
            let mut cluster = Cluster::start_with(options, sync_workers, 2, pushers).await?;
            let mut processes = Vec::new();
            let mut workers = Vec::new();
            for name in cluster.instance_names() {
                let role = cluster.role_of(name);
                let pid = cluster.pid_of(name).ok_or_else(|| anyhow::anyhow!("{name} is not running"))?;
                processes.push(ServerProcess { name: name.to_owned(), role: role.to_owned(), pid });
                if role != "master" {
                    workers.push(Worker { name: name.to_owned(), url: cluster.url_of(name) });
                }
            }
            return Ok(Spawned {
                base_url: cluster.base_url(),
                processes,
                // `Cluster::start` provisioned its database there, so this does not block.
                database_pid: Some(Postgres::shared()?.pid()),
                redis_pid: cluster.redis().pid(),
                // The testkit runs nginx as a child of this process.
                nginx_pid: crate::procfs::child_named(std::process::id(), "nginx"),
                workers,
                _server: None,
                _cluster: Some(cluster),
            });
        }
    };
    let server = TestServer::start(testkit_backend, options).await?;
    let database_pid = match backend {
        // Already started by `TestServer::start`, so this does not block.
        SpawnBackend::Postgres => Some(Postgres::shared()?.pid()),
        SpawnBackend::Sqlite | SpawnBackend::Cluster => None,
    };
    Ok(Spawned {
        base_url: server.base_url.clone(),
        processes: vec![ServerProcess {
            name: "ganglion".to_owned(),
            role: "all".to_owned(),
            pid: server.pid,
        }],
        database_pid,
        redis_pid: None,
        nginx_pid: None,
        workers: Vec::new(),
        _server: Some(server),
        _cluster: None,
    })
}

#[cfg(not(feature = "spawn"))]
pub async fn start(
    backend: SpawnBackend,
    _sync_workers: Option<u32>,
    _pusher_workers: Option<u32>,
    _extra_toml: Option<&str>,
) -> anyhow::Result<Spawned> {
    anyhow::bail!(
        "--spawn {} needs the `spawn` feature (ganglion-testkit); rebuild with default features, \
         or start a server yourself and use --url (with --server-pid for RSS)",
        backend.as_str()
    )
}
