//! Loopback ports for the processes tests start.
//!
//! A port the kernel picks (`bind` to port 0) lies in its ephemeral range (32768–60999 on Linux),
//! where every outgoing connection of a busy test run also takes its local port: released for the
//! process to bind, it can be taken by a connection first ("Address already in use"). Ports are
//! therefore picked below that range, one process-wide cursor handing each out once.

use std::{
    net::TcpListener,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::Context as _;

const FIRST: u32 = 20_000;
const LAST: u32 = 32_000;

/// Where this process starts looking: spread by process id, so test binaries that run one after
/// the other, or a leftover process, do not all start at the same port.
static CURSOR: AtomicU32 = AtomicU32::new(0);

fn next_candidate() -> u16 {
    let span = LAST - FIRST;
    let offset = CURSOR.fetch_add(1, Ordering::Relaxed);
    let start = (std::process::id().wrapping_mul(7919)) % span;
    (FIRST + (start + offset) % span) as u16
}

/// `count` distinct loopback ports nothing listens on right now. They are free when returned;
/// nothing else in this process will be handed them again.
pub fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let mut ports = Vec::with_capacity(count);
    for _ in 0..(LAST - FIRST) {
        if ports.len() == count {
            return Ok(ports);
        }
        let port = next_candidate();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    anyhow::ensure!(ports.len() == count, "no free loopback port between {FIRST} and {LAST}");
    Ok(ports)
}

/// One loopback port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    free_ports(1)?.pop().context("a free port")
}
