//! Cluster suite: a real cluster (PostgreSQL, Redis, master, 2 sync workers, 2 client-readers,
//! nginx from `ganglion routes --format nginx`) driven over HTTP while its processes and Redis
//! are killed and restarted. Waits are bounded; nothing sleeps to synchronise, only to keep a
//! fault in place for a while under load.

mod degraded;
mod faults;
mod routing;
mod sliding;
mod to_device;

use std::{future::Future, time::Duration};

/// Runs a scenario with an overall deadline, so a hang fails instead of stalling the suite.
async fn run(scenario: impl Future<Output = anyhow::Result<()>>) {
    match tokio::time::timeout(Duration::from_secs(600), scenario).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => panic!("{error:?}"),
        Err(_) => panic!("scenario did not finish within 10 minutes"),
    }
}
