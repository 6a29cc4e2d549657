//! Test harness for black-box tests: starts real `ganglion` processes and talks to them over HTTP.
//!
//! - [`TestServer`] writes a config file, spawns the binary, waits (bounded) for its
//!   `ganglion ready http://…` line and kills it on drop. [`Backend`] picks SQLite or a fresh
//!   database on a throwaway PostgreSQL cluster ([`Postgres`]), never the machine's own one.
//! - [`Api`] and [`Account`] are small reqwest helpers for exact wire checks.
//! - [`sdk_client`] gives a logged-in `matrix_sdk::Client` for the high-level scenarios.
//!
//! Everything here waits with a deadline; nothing sleeps to synchronise.

mod binary;
mod http;
mod postgres;
mod sdk;
mod server;
mod wait;

pub use binary::ganglion_binary;
pub use http::{Account, Api, Response, enc};
pub use postgres::Postgres;
pub use sdk::{sdk_client, sdk_login, sdk_new_client, sdk_register};
pub use server::{Backend, Bucket, RateLimits, ServerOptions, TestServer};
pub use wait::eventually;

/// Re-exported so that tests use the exact SDK (and ruma) the testkit was built against.
pub use matrix_sdk;
