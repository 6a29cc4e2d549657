//! The [`Master`](crate::Master) trait over gRPC (`ganglion.master.v1.Master`), for cluster
//! mode: [`serve`] in the master process, [`RemoteMaster`] in the workers.
//!
//! Errors cross typed: a failed call carries a `MasterFailure` in the status details, so a
//! worker answers with the master's exact error class and message. Proto types stay inside
//! this module.

mod client;
mod convert;
mod server;

pub use client::{RemoteMaster, with_positions_after};
pub use server::serve;

/// The W3C trace-context header, as gRPC metadata.
const TRACEPARENT: &str = "traceparent";
/// Response metadata: the master's positions once the call was done, so a worker waits for
/// its replication to reach its own write without asking again.
const POSITIONS: &str = "ganglion-positions";

#[cfg(test)]
mod tests;
