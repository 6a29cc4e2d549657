//! Starts a throwaway `ganglion` through ganglion-testkit, which also makes a throwaway
//! PostgreSQL database when asked for one. The only file that knows the testkit's API.
//!
//! The testkit finds the binary through `GANGLION_BIN`, else the newest of
//! `target/{debug,release}/ganglion`; `scripts/bench.sh` sets `GANGLION_BIN` to the release
//! build so that a newer debug build is never benchmarked by mistake.

use crate::cli::SpawnBackend;

/// A running throwaway server; dropping it stops the server. The throwaway PostgreSQL cluster
/// is stopped by the testkit when this process exits.
pub struct Spawned {
    pub base_url: String,
    pub pid: u32,
    /// The PostgreSQL postmaster, whose process tree's CPU time is reported too.
    pub database_pid: Option<u32>,
    #[cfg(feature = "spawn")]
    _server: ganglion_testkit::TestServer,
}

#[cfg(feature = "spawn")]
pub async fn start(backend: SpawnBackend) -> anyhow::Result<Spawned> {
    use ganglion_testkit::{Backend, Bucket, Postgres, RateLimits, ServerOptions, TestServer};

    // The limiter stays on, so its cost is part of the figures, but with buckets no run can
    // drain: every request comes from 127.0.0.1, and the tool sends thousands a second.
    let unreachable = Bucket { per_second: 1_000_000.0, burst: 10_000_000 };
    let options = ServerOptions {
        registration: true,
        rate_limits: Some(RateLimits {
            enabled: true,
            per_user: unreachable,
            per_ip: unreachable,
            login: unreachable,
        }),
        ..ServerOptions::default()
    };
    let testkit_backend = match backend {
        SpawnBackend::Sqlite => Backend::Sqlite,
        SpawnBackend::Postgres => Backend::Postgres,
    };
    let server = TestServer::start(testkit_backend, options).await?;
    let database_pid = match backend {
        SpawnBackend::Sqlite => None,
        // Already started by `TestServer::start`, so this does not block.
        SpawnBackend::Postgres => Some(Postgres::shared()?.pid()),
    };
    Ok(Spawned { base_url: server.base_url.clone(), pid: server.pid, database_pid, _server: server })
}

#[cfg(not(feature = "spawn"))]
pub async fn start(backend: SpawnBackend) -> anyhow::Result<Spawned> {
    anyhow::bail!(
        "--spawn {} needs the `spawn` feature (ganglion-testkit); rebuild with default features, \
         or start a server yourself and use --url (with --server-pid for RSS)",
        backend.as_str()
    )
}
