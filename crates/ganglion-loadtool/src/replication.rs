//! Replication lag of a cluster's workers, from `GET /_ganglion/v1/replication` on each worker's
//! own URL. Each call answers the lag of the entries the worker took from Redis since the previous
//! call and forgets them, so the run calls every worker once as the measured window starts (to
//! reset) and once as it ends (to read the window's figures).

use std::time::Duration;

use anyhow::Context as _;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use crate::server::Worker;

pub const PATH: &str = "/_ganglion/v1/replication";
const TIMEOUT: Duration = Duration::from_secs(10);

/// A worker's answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Status {
    /// Whether wake-ups come from Redis (false: the worker is polling the database).
    pub following_redis: bool,
    /// The worker's readable positions (a sync token's text).
    pub positions: String,
    pub lag_ms: Lag,
}

/// Lag from the master's publish to the worker having recorded an entry, in milliseconds, over
/// `samples` entries. All zero when there were none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
pub struct Lag {
    pub samples: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// One worker's readings at both ends of the window; `Err` holds why a call failed.
#[derive(Debug, Clone)]
pub struct WorkerReadings {
    pub name: String,
    pub start: Result<Status, String>,
    pub end: Result<Status, String>,
}

pub struct Poller {
    http: reqwest::Client,
}

impl Poller {
    pub fn new() -> anyhow::Result<Poller> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .context("building the HTTP client for /_ganglion/v1/replication")?;
        Ok(Poller { http })
    }

    /// Calls every worker at once; answers in `workers` order.
    pub async fn poll(&self, workers: &[Worker]) -> Vec<Result<Status, String>> {
        join_all(workers.iter().map(|worker| self.status(worker))).await
    }

    async fn status(&self, worker: &Worker) -> Result<Status, String> {
        let url = format!("{}{PATH}", worker.url.trim_end_matches('/'));
        let response = self.http.get(&url).send().await.map_err(|error| format!("GET {url}: {error:#}"))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|error| format!("GET {url}: {error:#}"))?;
        if !status.is_success() {
            let body = String::from_utf8_lossy(&body);
            return Err(format!("GET {url}: {status}: {}", body.chars().take(200).collect::<String>()));
        }
        serde_json::from_slice(&body).map_err(|error| format!("GET {url}: unexpected body: {error}"))
    }
}

#[cfg(test)]
mod tests;
