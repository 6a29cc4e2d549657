//! Replication over Redis Streams, for cluster mode.
//!
//! The master publishes each committed row on one Redis Stream per stream ([`RedisBus`]);
//! workers follow them with blocking reads ([`Follower`]). Redis only carries wake-ups and
//! recent rows: rows of the database-backed streams (events, receipts, account data) have the
//! Redis entry id `<position>-0`, so a worker resumes exactly where it left off, and whenever it
//! sees a gap, reconnects or starts, it reads what it missed from the database by position.
//! Typing (held in the master's memory) and cache invalidations have no table: a worker that
//! may have missed some asks the master for the typing state and drops all of its caches.
//!
//! Entry fields are short and readable with `redis-cli XRANGE`: `p` position, `r` room id,
//! `u` user ids (JSON array), `n` event nid, `e` the master's epoch, `s` invalidation sequence,
//! `w` what to invalidate, `t` publish time (µs since the Unix epoch, for replication lag).

mod follower;
mod publisher;

pub use follower::{Follower, FollowerHooks, LagStats, TypingState};
pub use publisher::RedisBus;

use std::time::{SystemTime, UNIX_EPOCH};

use ganglion_types::StreamKind;

/// Streams whose rows live in the database, in the order a worker reads them.
const DB_STREAMS: [StreamKind; 3] = [StreamKind::Events, StreamKind::Receipts, StreamKind::AccountData];

fn key_of(kind: StreamKind) -> &'static str {
    match kind {
        StreamKind::Events => "ganglion:events",
        StreamKind::Receipts => "ganglion:receipts",
        StreamKind::Typing => "ganglion:typing",
        StreamKind::AccountData => "ganglion:account_data",
    }
}

const CACHES_KEY: &str = "ganglion:caches";

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests;
