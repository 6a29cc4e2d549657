//! Test harness for black-box tests: starts real `ganglion` processes and talks to them over HTTP.
//!
//! - [`TestServer`] writes a config file, spawns the binary, waits (bounded) for its
//!   `ganglion ready http://…` line and kills it on drop. [`Backend`] picks SQLite, a fresh
//!   database on a throwaway PostgreSQL cluster ([`Postgres`], never the machine's own one), or a
//!   whole [`Cluster`] behind nginx, so the same scenario runs on every topology.
//! - [`Cluster`] starts a split cluster from one config file: a fresh PostgreSQL database, a
//!   throwaway [`Redis`], the master, two sync workers, two client-readers and [`Nginx`] with the
//!   config `ganglion routes --format nginx` prints. Cluster tests kill, restart and terminate its
//!   processes (by pid) and stop, kill or flush its Redis. [`Cluster::haproxy`] puts a [`Haproxy`]
//!   (`ganglion routes --format haproxy`) in front of the same processes too.
//! - [`Api`] and [`Account`] are small reqwest helpers for exact wire checks.
//! - [`sdk_client`] gives a logged-in `matrix_sdk::Client` for the high-level scenarios.
//!
//! Every process started here dies with the test process (parent-death signal) and is killed on
//! drop; `GANGLION_TESTKIT_KEEP=1` keeps the temp directories (configs, logs) for a look after.
//! Everything waits with a deadline; nothing sleeps to synchronise.

mod binary;
mod clamd;
mod cluster;
mod federation;
mod haproxy;
mod http;
mod nginx;
mod node;
mod ports;
mod postgres;
mod prometheus;
mod proxy;
mod python;
mod redis;
mod s3;
mod sdk;
mod server;
mod synapse;
mod wait;

pub use binary::ganglion_binary;
pub use clamd::{Clamd, EICAR};
pub use cluster::{Cluster, self_signed_certificate};
pub use federation::FederationNode;
pub use haproxy::Haproxy;
pub use http::{Account, Api, Response, enc};
pub use nginx::{Nginx, free_port};
pub use node::grafana_schema;
pub use postgres::Postgres;
pub use prometheus::Prometheus;
pub use python::{ansible_venv, python_venv, python_with_nio};
pub use redis::{Redis, Reply};
pub use s3::{S3_BUCKET, S3Server};
pub use sdk::{sdk_client, sdk_login, sdk_new_client, sdk_register};
pub use server::{Backend, Bucket, RateLimits, ServerOptions, TestServer};
pub use synapse::{Synapse, synapse_venv};
pub use wait::eventually;

/// Re-exported so that tests use the exact SDK (and ruma) the testkit was built against.
pub use matrix_sdk;
