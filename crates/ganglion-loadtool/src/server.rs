//! The server under load: either one already running at `--url`, or a throwaway one started
//! through `spawn`. Dropping a spawned server stops it.

use crate::cli::Args;
use crate::spawn::Spawned;

pub struct Server {
    pub base_url: String,
    /// The process whose RSS and CPU time are reported, if known.
    pub pid: Option<u32>,
    /// A spawned PostgreSQL's postmaster, whose process tree's CPU time is reported.
    pub database_pid: Option<u32>,
    /// `sqlite`, `postgres`, or `url` for a server started elsewhere.
    pub backend: &'static str,
    /// Keeps a spawned server alive until the `Server` is dropped.
    _spawned: Option<Spawned>,
}

impl Server {
    pub async fn start(args: &Args) -> anyhow::Result<Server> {
        if let Some(backend) = args.spawn {
            let spawned = crate::spawn::start(backend).await?;
            return Ok(Server {
                base_url: spawned.base_url.clone(),
                pid: Some(spawned.pid),
                database_pid: spawned.database_pid,
                backend: backend.as_str(),
                _spawned: Some(spawned),
            });
        }
        let Some(url) = &args.url else {
            anyhow::bail!("either --url or --spawn is required");
        };
        Ok(Server {
            base_url: url.clone(),
            pid: args.server_pid,
            database_pid: None,
            backend: "url",
            _spawned: None,
        })
    }
}
