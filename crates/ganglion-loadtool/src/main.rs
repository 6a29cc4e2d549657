//! `ganglion-load`: a closed-loop load benchmark for the client-server API of any homeserver
//! (Ganglion, Synapse, …). It registers users, puts them in rooms, keeps one `/sync` long-poll
//! per user (or per syncing user), sends messages from concurrent senders and reports sends/s,
//! deliveries/s, /sync responses/s, send and fan-out latency, initial sync time and server RSS
//! and CPU; for a cluster, also every worker's replication lag. The rooms may be encrypted; other workloads
//! send to-device messages to many devices, or claim and query end-to-end encryption keys; two
//! measure simplified sliding sync: the time to a first room list, and a live update's cost.
//! With --push every syncing user also has a pusher to a push gateway the tool runs, which
//! times each push from the send.
//!
//! It is a benchmark, not a test: it measures and reports, and asserts nothing about the server
//! beyond what it needs to run. Every non-2xx answer is counted in the report.

mod backoff;
mod cli;
mod clock;
mod e2ee;
mod keys;
mod matrix;
mod media;
mod plan;
mod procfs;
mod push;
mod receiver;
mod replication;
mod report;
mod run;
mod sender;
mod server;
mod setup;
mod sliding;
mod spawn;
mod stats;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    clock::init();
    let args = cli::Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.client_threads {
        runtime.worker_threads(threads as usize);
    }
    let outcome = runtime.build().map_err(anyhow::Error::from).and_then(|runtime| {
        runtime.block_on(async {
            // Ctrl-C drops the run, and with it a spawned server, so none is left behind.
            tokio::select! {
                outcome = run::run(args) => outcome,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            }
        })
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ganglion-load: {error:#}");
            ExitCode::FAILURE
        }
    }
}
